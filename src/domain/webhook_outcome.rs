//! `cal_webhook_receipts.outcome`: what became of one webhook body ([`WebhookOutcome`]), spelled
//! once here. `db::webhook` binds [`WebhookOutcome::as_str`]; the HTTP answer, the `--json`
//! output and the `cal_webhook_received` event carry the same text. No I/O.

use std::fmt;

/// What became of one webhook body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WebhookOutcome {
    /// Stored, not yet applied (or its apply died): `journeyctl webhook --replay` takes it.
    Received,
    /// Applied to its booking.
    Applied,
    /// Verified and understood, nothing to store (a PING, an unknown trigger, no uid).
    Acknowledged,
    /// The same bytes were applied or acknowledged before: nothing changed.
    Duplicate,
    /// The signature did not verify (401); nothing is stored.
    Unauthorized,
    /// Not a Cal.com body (400).
    Invalid,
    /// Over the size limit (413); nothing is stored.
    TooLarge,
    /// The apply failed (500); the booking's changes were rolled back, the body is kept.
    Error,
}

impl WebhookOutcome {
    pub const ALL: [WebhookOutcome; 8] = [
        WebhookOutcome::Received,
        WebhookOutcome::Applied,
        WebhookOutcome::Acknowledged,
        WebhookOutcome::Duplicate,
        WebhookOutcome::Unauthorized,
        WebhookOutcome::Invalid,
        WebhookOutcome::TooLarge,
        WebhookOutcome::Error,
    ];

    /// The database text (and the `outcome` of the HTTP answer).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Received => "received",
            WebhookOutcome::Applied => "applied",
            WebhookOutcome::Acknowledged => "acknowledged",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Unauthorized => "unauthorized",
            WebhookOutcome::Invalid => "invalid",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<WebhookOutcome> {
        WebhookOutcome::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// Final outcomes: a receipt settled so is never downgraded, and the same bytes arriving
    /// again are a [`WebhookOutcome::Duplicate`].
    pub fn is_final(self) -> bool {
        match self {
            WebhookOutcome::Applied | WebhookOutcome::Acknowledged => true,
            WebhookOutcome::Received
            | WebhookOutcome::Duplicate
            | WebhookOutcome::Unauthorized
            | WebhookOutcome::Invalid
            | WebhookOutcome::TooLarge
            | WebhookOutcome::Error => false,
        }
    }

    /// SQL list of the final outcomes, e.g. `('applied', 'acknowledged')`, for `IN`.
    pub fn sql_final() -> String {
        let names: Vec<String> = WebhookOutcome::ALL
            .into_iter()
            .filter(|o| o.is_final())
            .map(|o| format!("'{}'", o.as_str()))
            .collect();
        format!("({})", names.join(", "))
    }
}

impl fmt::Display for WebhookOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for WebhookOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_reads_back_from_its_database_text() {
        for o in WebhookOutcome::ALL {
            assert_eq!(WebhookOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(WebhookOutcome::parse("APPLIED"), None);
    }

    #[test]
    fn the_final_outcomes_are_applied_and_acknowledged() {
        assert_eq!(WebhookOutcome::sql_final(), "('applied', 'acknowledged')");
    }
}
