//! Twilio's `MessageStatus` of an SMS after it was accepted, and its order: a late or repeated
//! status callback never moves a message back. `delivered`, `undelivered`, `failed` and
//! `canceled` are final. The one place this text is converted to and from the enum, also for
//! SQL ([`SmsStatus::sql_rank`]).

/// A message's status as Twilio reports it (`MessageStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SmsStatus {
    Accepted,
    Scheduled,
    Queued,
    Sending,
    Sent,
    Delivered,
    Undelivered,
    Failed,
    Canceled,
}

impl SmsStatus {
    pub const ALL: [SmsStatus; 9] = [
        SmsStatus::Accepted,
        SmsStatus::Scheduled,
        SmsStatus::Queued,
        SmsStatus::Sending,
        SmsStatus::Sent,
        SmsStatus::Delivered,
        SmsStatus::Undelivered,
        SmsStatus::Failed,
        SmsStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SmsStatus::Accepted => "accepted",
            SmsStatus::Scheduled => "scheduled",
            SmsStatus::Queued => "queued",
            SmsStatus::Sending => "sending",
            SmsStatus::Sent => "sent",
            SmsStatus::Delivered => "delivered",
            SmsStatus::Undelivered => "undelivered",
            SmsStatus::Failed => "failed",
            SmsStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<SmsStatus> {
        SmsStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// How far along the message is; a status never replaces one of a higher rank, and the
    /// final ones (rank 4) are never replaced at all.
    pub fn rank(self) -> i32 {
        match self {
            SmsStatus::Accepted | SmsStatus::Scheduled | SmsStatus::Queued => 1,
            SmsStatus::Sending => 2,
            SmsStatus::Sent => 3,
            SmsStatus::Delivered
            | SmsStatus::Undelivered
            | SmsStatus::Failed
            | SmsStatus::Canceled => 4,
        }
    }

    pub fn is_final(self) -> bool {
        self.rank() == 4
    }

    /// [`SmsStatus::rank`] of a text column as SQL (unknown or NULL: 0).
    pub fn sql_rank(column: &str) -> String {
        let arms: String = SmsStatus::ALL
            .iter()
            .map(|s| format!(" WHEN '{}' THEN {}", s.as_str(), s.rank()))
            .collect();
        format!("(CASE {column}{arms} ELSE 0 END)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_outrank_every_other() {
        for s in SmsStatus::ALL {
            assert_eq!(s.is_final(), s.rank() == 4);
            assert!(SmsStatus::Sent.rank() >= s.rank() || s.is_final());
        }
        assert!(SmsStatus::Sent.rank() > SmsStatus::Queued.rank());
    }
}
