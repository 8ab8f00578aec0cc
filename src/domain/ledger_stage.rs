//! `journey_deliveries.stage`: which message series a ledger row belongs to ([`LedgerStage`]),
//! spelled once here. Each timed stage names its own (`Stage::ledger_stage`; the webhook's
//! confirmations and confirmation recovery share [`LedgerStage::Confirmation`]); the
//! cancellation notice, sent by the webhook only, has [`LedgerStage::CancellationNotice`].
//! No I/O.

use std::fmt;

/// `journey_deliveries.stage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LedgerStage {
    /// The webhook's confirmations and `confirmation-recovery`, one series so that one can
    /// never duplicate the other.
    Confirmation,
    Reminder24h,
    Reminder1h,
    IntroFollowup,
    SessionFollowup,
    CancellationRecovery,
    /// The withdrawal of a cancelled booking's invite (webhook only, no timed stage).
    CancellationNotice,
}

impl LedgerStage {
    pub const ALL: [LedgerStage; 7] = [
        LedgerStage::Confirmation,
        LedgerStage::Reminder24h,
        LedgerStage::Reminder1h,
        LedgerStage::IntroFollowup,
        LedgerStage::SessionFollowup,
        LedgerStage::CancellationRecovery,
        LedgerStage::CancellationNotice,
    ];

    /// The database text.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerStage::Confirmation => "confirmation",
            LedgerStage::Reminder24h => "reminder_24h",
            LedgerStage::Reminder1h => "reminder_1h",
            LedgerStage::IntroFollowup => "intro_followup",
            LedgerStage::SessionFollowup => "session_followup",
            LedgerStage::CancellationRecovery => "cancellation_recovery",
            LedgerStage::CancellationNotice => "cancellation_notice",
        }
    }

    pub fn parse(text: &str) -> Option<LedgerStage> {
        LedgerStage::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for LedgerStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for LedgerStage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Stage;

    #[test]
    fn every_ledger_stage_reads_back_from_its_database_text() {
        for s in LedgerStage::ALL {
            assert_eq!(LedgerStage::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn every_timed_stage_writes_a_known_ledger_stage_of_its_own() {
        let mut seen = std::collections::HashSet::new();
        for stage in Stage::ALL {
            let ledger = LedgerStage::parse(stage.ledger_stage());
            assert!(ledger.is_some(), "{stage}");
            assert!(seen.insert(ledger), "{stage}");
        }
        assert!(!seen.contains(&Some(LedgerStage::CancellationNotice)));
    }
}
