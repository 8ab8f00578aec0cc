//! The stages of the journey. Each timed stage is one file holding everything true of it: its
//! `FACTS` (names, window, cadence, mark columns, selection, message kinds) and its rule, a
//! pure "who is due, what to send" over selected rows, with the rule's unit tests. This module
//! maps a [`Stage`] to its file ([`Stage::facts`], [`plan_for`]); `driver` claims, renders,
//! sends and records, the same way for all. Adding a stage: see docs/ARCHITECTURE.md.

mod batch;
mod batch_claim;
pub(crate) mod cancellation_notice;
pub(crate) mod cancellation_recovery;
pub(crate) mod confirmation_recovery;
pub(crate) mod control;
mod decide;
mod deliver;
pub mod driver;
#[cfg(test)]
mod fixtures;
pub(crate) mod followups;
pub(crate) mod gate;
pub(crate) mod intro_followup;
mod journey;
pub(crate) mod optout;
mod outcome;
pub(crate) mod plan;
mod process;
pub(crate) mod reminder_1h;
pub(crate) mod reminder_24h;
pub(crate) mod reminders;
mod render;
mod report;
mod row;
mod select;
pub(crate) mod session_followup;
mod stamper;

use chrono::Duration;

use crate::config::{parse_offset, ConfigError};
use crate::domain::{LedgerStage, Stage, StageFacts};
use plan::{Plan, PlanInput};

pub use confirmation_recovery::Origin;

pub(crate) use batch::CLAIM_BATCH;
pub use control::{RunControl, StopReason};
pub use driver::{run_stage, Journey, PlannedMessage, StageOptions, StageReport};
pub(crate) use select::{prepare, run_prepared};

impl Stage {
    /// Everything true of this stage, from its file. The one place a stage is mapped to its
    /// facts: a new stage's variant fails to compile here until its file exists.
    pub fn facts(self) -> &'static StageFacts {
        match self {
            Stage::ConfirmationRecovery => &confirmation_recovery::FACTS,
            Stage::Reminder24h => &reminder_24h::FACTS,
            Stage::Reminder1h => &reminder_1h::FACTS,
            Stage::IntroFollowup => &intro_followup::FACTS,
            Stage::SessionFollowup => &session_followup::FACTS,
            Stage::CancellationRecovery => &cancellation_recovery::FACTS,
        }
    }

    /// The stage id used in reports, `journey_runs` and events.
    pub fn as_str(self) -> &'static str {
        self.facts().name
    }

    /// The subcommand name.
    pub fn command(self) -> &'static str {
        self.facts().command
    }

    /// The value of `journey_deliveries.stage` (see [`StageFacts::ledger_stage`]).
    pub fn ledger_stage(self) -> &'static str {
        self.facts().ledger_stage.as_str()
    }

    /// [`Stage::ledger_stage`] as the enum, for row structs.
    pub fn ledger(self) -> LedgerStage {
        self.facts().ledger_stage
    }

    /// Default selection window, as offsets from `now` (earlier, later).
    pub fn default_window(self) -> (Duration, Duration) {
        self.facts().window
    }

    /// How often the shipped schedule runs this stage.
    pub fn cadence(self) -> Duration {
        self.facts().cadence
    }

    /// The `cal_bookings` column that marks this stage done.
    pub fn mark_column(self) -> &'static str {
        self.facts().mark_column
    }

    /// How long a patient who got this stage's message is not sent it again for another
    /// booking (cancellation recovery only).
    pub fn patient_exclusive_period(self) -> Option<Duration> {
        self.facts().patient_exclusive_period
    }
}

/// The stage's rule applied to one selected booking. `origin` matters to confirmation only
/// (the webhook's path redirects test bookings to QA; recovery never sends for them).
pub(crate) fn plan_for(stage: Stage, origin: Origin, input: &PlanInput<'_>) -> Plan {
    match stage {
        Stage::ConfirmationRecovery => confirmation_recovery::plan(input, origin),
        Stage::Reminder24h => reminder_24h::plan(input),
        Stage::Reminder1h => reminder_1h::plan(input),
        Stage::IntroFollowup => intro_followup::plan(input),
        Stage::SessionFollowup => session_followup::plan(input),
        Stage::CancellationRecovery => cancellation_recovery::plan(input),
    }
}

/// Whether a stage's window lies behind `now` (followups, recoveries) or ahead (reminders).
pub fn looks_back(stage: Stage) -> bool {
    stage.facts().selection.anchor.looks_back()
}

/// The window as offsets from now, `(earlier, later)`. Flags override the defaults; for
/// stages that look back, unsigned durations mean "ago" (`--window-start 10m --window-end 30m`
/// on intro-followup is "ended 10 to 30 minutes ago"). The order of the two does not matter.
pub fn resolve_window(
    stage: Stage,
    start: Option<&str>,
    end: Option<&str>,
) -> Result<(Duration, Duration), ConfigError> {
    let (d_start, d_end) = stage.default_window();
    let parse =
        |flag: &str, raw: Option<&str>, default: Duration| -> Result<Duration, ConfigError> {
            match raw {
                None => Ok(default),
                Some(r) => {
                    let d = parse_offset(flag, r)?;
                    Ok(if looks_back(stage) && d > Duration::zero() {
                        -d
                    } else {
                        d
                    })
                }
            }
        };
    let a = parse("--window-start", start, d_start)?;
    let b = parse("--window-end", end, d_end)?;
    Ok(if a <= b { (a, b) } else { (b, a) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        assert_eq!(
            resolve_window(Stage::Reminder1h, None, None).unwrap(),
            (Duration::minutes(50), Duration::minutes(70))
        );
        assert_eq!(
            resolve_window(Stage::IntroFollowup, None, None).unwrap(),
            (Duration::minutes(-30), Duration::minutes(-10))
        );
    }

    #[test]
    fn every_stage_is_found_by_its_names_and_its_ledger_stage() {
        for stage in Stage::ALL {
            assert_eq!(Stage::parse(stage.as_str()), Some(stage));
            assert_eq!(Stage::parse(stage.command()), Some(stage));
            assert_eq!(Stage::from_ledger_stage(stage.ledger_stage()), Some(stage));
        }
        assert_eq!(
            Stage::from_ledger_stage(crate::domain::LedgerStage::Confirmation.as_str()),
            Some(Stage::ConfirmationRecovery)
        );
        assert_eq!(
            Stage::from_ledger_stage(crate::domain::LedgerStage::CancellationNotice.as_str()),
            None
        );
    }

    #[test]
    fn the_cadence_is_never_wider_than_the_window() {
        for stage in Stage::ALL {
            let (start, end) = stage.default_window();
            assert!(start < end, "{stage}");
            assert!(stage.cadence() <= end - start, "{stage}");
        }
    }

    #[test]
    fn mark_columns_split_confirmation_by_role_and_skip_qa() {
        use crate::domain::mark_column;
        use crate::domain::RecipientRole::*;
        assert_eq!(
            mark_column(Stage::ConfirmationRecovery, Patient),
            Some("client_confirmation_sent_at")
        );
        assert_eq!(
            mark_column(Stage::ConfirmationRecovery, Therapist),
            Some("therapist_notification_sent_at")
        );
        for stage in Stage::ALL {
            assert_eq!(mark_column(stage, Qa), None, "{stage}");
        }
        for stage in &Stage::ALL[1..] {
            assert_eq!(mark_column(*stage, Patient), Some(stage.mark_column()));
            assert_eq!(stage.facts().booking_roles(), [Patient], "{stage}");
        }
        assert_eq!(
            mark_column(Stage::Reminder1h, Patient),
            Some("reminder_1h_sent_at")
        );
    }

    #[test]
    fn only_cancellation_recovery_is_exclusive_per_patient_for_72_hours() {
        for stage in Stage::ALL {
            let expected = (stage == Stage::CancellationRecovery).then(|| Duration::hours(72));
            assert_eq!(stage.patient_exclusive_period(), expected, "{stage}");
        }
    }

    #[test]
    fn every_stage_sends_its_own_kinds_and_only_reminders_look_ahead_or_send_sms() {
        use crate::domain::MessageKind;
        let mut seen = Vec::new();
        for stage in Stage::ALL {
            let facts = stage.facts();
            assert!(!facts.kinds.is_empty(), "{stage}");
            seen.extend(facts.kinds.iter().copied());
            let reminder = matches!(stage, Stage::Reminder24h | Stage::Reminder1h);
            assert_eq!(facts.sends_sms(), reminder, "{stage}");
            assert_eq!(looks_back(stage), !reminder, "{stage}");
        }
        let distinct: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), seen.len(), "no kind belongs to two stages");
        assert!(!seen.contains(&MessageKind::CancellationNotice));
    }

    #[test]
    fn look_back_windows_take_unsigned_durations_as_ago() {
        assert_eq!(
            resolve_window(Stage::SessionFollowup, Some("3d"), Some("6d")).unwrap(),
            (Duration::days(-6), Duration::days(-3))
        );
        assert_eq!(
            resolve_window(Stage::Reminder24h, Some("26h"), Some("22h")).unwrap(),
            (Duration::hours(22), Duration::hours(26))
        );
    }
}
