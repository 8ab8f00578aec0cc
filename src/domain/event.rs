//! The `events` table's vocabulary: what happened ([`EventKind`], column `type`) and how loud it
//! is ([`EventLevel`], column `level`). The one place these names are spelled; `db` binds
//! [`EventKind::as_str`] and [`EventLevel::as_str`] as parameters. No I/O.

use std::fmt;

/// `events.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A message went out by email.
    EmailSent,
    /// A message went out by SMS.
    SmsSent,
    /// Twilio refused an SMS because its recipient opted out (STOP).
    SmsOptedOut,
    /// Twilio refused an SMS because the number cannot receive one.
    SmsUnreachable,
    /// A failure counted by a run, a delivery or a webhook.
    Error,
    /// A recipient unsubscribed through the link in a message.
    Unsubscribed,
    /// A webhook body was settled (its receipt's outcome).
    CalWebhookReceived,
    /// A `followups` run finished.
    CalBookingFollowupsCompleted,
    /// An operator settled an in-doubt delivery (`journeyctl resolve`).
    DeliveryResolved,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::EmailSent,
        EventKind::SmsSent,
        EventKind::SmsOptedOut,
        EventKind::SmsUnreachable,
        EventKind::Error,
        EventKind::Unsubscribed,
        EventKind::CalWebhookReceived,
        EventKind::CalBookingFollowupsCompleted,
        EventKind::DeliveryResolved,
    ];

    /// The database text.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::EmailSent => "email_sent",
            EventKind::SmsSent => "sms_sent",
            EventKind::SmsOptedOut => "sms_opted_out",
            EventKind::SmsUnreachable => "sms_unreachable",
            EventKind::Error => "error",
            EventKind::Unsubscribed => "unsubscribed",
            EventKind::CalWebhookReceived => "cal_webhook_received",
            EventKind::CalBookingFollowupsCompleted => "cal_booking_followups_completed",
            EventKind::DeliveryResolved => "delivery_resolved",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The level this kind is written with, except where the level depends on the case
    /// (a webhook receipt or a followups run that ended with an error is a warning).
    pub fn level(self) -> EventLevel {
        match self {
            EventKind::Error => EventLevel::Error,
            EventKind::SmsUnreachable => EventLevel::Warn,
            EventKind::EmailSent
            | EventKind::SmsSent
            | EventKind::SmsOptedOut
            | EventKind::Unsubscribed
            | EventKind::CalWebhookReceived
            | EventKind::CalBookingFollowupsCompleted
            | EventKind::DeliveryResolved => EventLevel::Info,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `events.level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventLevel {
    Info,
    Warn,
    Error,
}

impl EventLevel {
    pub const ALL: [EventLevel; 3] = [EventLevel::Info, EventLevel::Warn, EventLevel::Error];

    /// The database text.
    pub fn as_str(self) -> &'static str {
        match self {
            EventLevel::Info => "info",
            EventLevel::Warn => "warn",
            EventLevel::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<EventLevel> {
        EventLevel::ALL.into_iter().find(|l| l.as_str() == text)
    }
}

impl fmt::Display for EventLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_level_reads_back_from_its_database_text() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        for level in EventLevel::ALL {
            assert_eq!(EventLevel::parse(level.as_str()), Some(level));
        }
        assert_eq!(EventKind::parse("ERROR"), None);
    }

    #[test]
    fn only_errors_are_written_at_error_level() {
        for kind in EventKind::ALL {
            assert_eq!(
                kind.level() == EventLevel::Error,
                kind == EventKind::Error,
                "{kind}"
            );
        }
    }
}
