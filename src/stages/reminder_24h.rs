//! `reminder-24h`: the facts of the reminder a day ahead and its rule (shared with the other reminder,
//! in `reminders.rs`).

use chrono::Duration;

use super::plan::{Plan, PlanInput};
use super::reminders;
use crate::domain::{LedgerStage, MessageKind, StageFacts};

/// The message this stage sends, by email and SMS.
const KIND: MessageKind = MessageKind::Reminder24h;

/// The `--help` line of its command.
const HELP: &str = "Remind patients 24 hours before the session (email + SMS)";

pub(crate) const FACTS: StageFacts = StageFacts {
    name: "reminder_24h",
    command: "reminder-24h",
    help: HELP,
    ledger_stage: LedgerStage::Reminder24h,
    window: (Duration::hours(23), Duration::hours(25)),
    cadence: Duration::minutes(30),
    mark_column: "reminder_24h_sent_at",
    therapist_mark_column: None,
    patient_exclusive_period: None,
    selection: reminders::SELECTION,
    kinds: &[KIND],
    miss_detail: "never selected or sent",
};

pub(crate) fn plan(input: &PlanInput<'_>) -> Plan {
    reminders::plan(input, KIND)
}
