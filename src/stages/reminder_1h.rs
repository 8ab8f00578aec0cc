//! `reminder-1h`: the facts of the reminder an hour ahead and its rule (shared with the other reminder,
//! in `reminders.rs`).

use chrono::Duration;

use super::plan::{Plan, PlanInput};
use super::reminders;
use crate::domain::{LedgerStage, MessageKind, StageFacts};

/// The message this stage sends, by email and SMS.
const KIND: MessageKind = MessageKind::Reminder1h;

/// The `--help` line of its command.
const HELP: &str = "Remind patients 1 hour before the session (email + SMS)";

pub(crate) const FACTS: StageFacts = StageFacts {
    name: "reminder_1h",
    command: "reminder-1h",
    help: HELP,
    ledger_stage: LedgerStage::Reminder1h,
    window: (Duration::minutes(50), Duration::minutes(70)),
    cadence: Duration::minutes(5),
    mark_column: "reminder_1h_sent_at",
    therapist_mark_column: None,
    patient_exclusive_period: None,
    selection: reminders::SELECTION,
    kinds: &[KIND],
    miss_detail: "never selected or sent",
};

pub(crate) fn plan(input: &PlanInput<'_>) -> Plan {
    reminders::plan(input, KIND)
}
