//! The journey's stages and the facts that belong to each: its names (report id, subcommand,
//! ledger stage), its window, its cadence, the booking column that marks it done and the
//! cancellation recovery's per-patient period. `audit`, `status`, the selection and the
//! schedule proof read them from here; see docs/ARCHITECTURE.md. Also the small enums every
//! delivery is described by (channel, recipient role, delivery status, message kind).

use std::fmt;

/// A stage of the journey as an operator runs it (one subcommand each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    ConfirmationRecovery,
    Reminder24h,
    Reminder1h,
    IntroFollowup,
    SessionFollowup,
    CancellationRecovery,
}

impl Stage {
    /// Every stage, in the order `journeyctl followups` runs them.
    pub const ALL: [Stage; 6] = [
        Stage::ConfirmationRecovery,
        Stage::Reminder24h,
        Stage::Reminder1h,
        Stage::IntroFollowup,
        Stage::SessionFollowup,
        Stage::CancellationRecovery,
    ];

    /// The stage id used in reports, `journey_runs` and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::ConfirmationRecovery => "confirmation_recovery",
            Stage::Reminder24h => "reminder_24h",
            Stage::Reminder1h => "reminder_1h",
            Stage::IntroFollowup => "intro_followup",
            Stage::SessionFollowup => "session_followup",
            Stage::CancellationRecovery => "cancellation_recovery",
        }
    }

    /// The subcommand name.
    pub fn command(self) -> &'static str {
        match self {
            Stage::ConfirmationRecovery => "confirmation-recovery",
            Stage::Reminder24h => "reminder-24h",
            Stage::Reminder1h => "reminder-1h",
            Stage::IntroFollowup => "intro-followup",
            Stage::SessionFollowup => "session-followup",
            Stage::CancellationRecovery => "cancellation-recovery",
        }
    }

    /// The value of `journey_deliveries.stage`. The webhook's confirmations and confirmation
    /// recovery share one ledger stage so that one can never duplicate the other.
    pub fn ledger_stage(self) -> &'static str {
        match self {
            Stage::ConfirmationRecovery => CONFIRMATION_LEDGER_STAGE,
            other => other.as_str(),
        }
    }

    /// Default selection window, as offsets from `now` (start, end).
    /// Reminders look ahead at `start_time`; followups look back at `end_time`;
    /// cancellation recovery looks back at `cancelled_at`. Confirmation recovery has no
    /// look-back: it takes every unconfirmed booking whose session is still ahead and that was
    /// created before the window's end (10 min ago); its start only states the width the
    /// schedule proof checks the cadence against.
    pub fn default_window(self) -> (chrono::Duration, chrono::Duration) {
        use chrono::Duration as D;
        match self {
            Stage::ConfirmationRecovery => (D::days(-7), D::minutes(-10)),
            Stage::Reminder24h => (D::hours(23), D::hours(25)),
            Stage::Reminder1h => (D::minutes(50), D::minutes(70)),
            Stage::IntroFollowup => (D::minutes(-30), D::minutes(-10)),
            Stage::SessionFollowup => (D::days(-5), D::days(-3)),
            Stage::CancellationRecovery => (D::hours(-4), D::hours(-2)),
        }
    }

    /// How often the shipped schedule (crontab.example, systemd/) runs this stage. Never longer
    /// than the window, or bookings fall between two runs.
    pub fn cadence(self) -> chrono::Duration {
        match self {
            Stage::ConfirmationRecovery | Stage::Reminder1h | Stage::IntroFollowup => {
                chrono::Duration::minutes(5)
            }
            Stage::Reminder24h | Stage::SessionFollowup | Stage::CancellationRecovery => {
                chrono::Duration::minutes(30)
            }
        }
    }

    /// The `cal_bookings` column that marks this stage done.
    pub fn mark_column(self) -> &'static str {
        match self {
            Stage::ConfirmationRecovery => "client_confirmation_sent_at",
            Stage::Reminder24h => "reminder_24h_sent_at",
            Stage::Reminder1h => "reminder_1h_sent_at",
            Stage::IntroFollowup => "followup_sent_at",
            Stage::SessionFollowup => "session_followup_sent_at",
            Stage::CancellationRecovery => "cancellation_recovery_sent_at",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s || st.command() == s)
    }

    /// The stage whose deliveries carry this `journey_deliveries.stage` (`confirmation` is
    /// confirmation recovery's, shared with the webhook). `None` for ledger stages that are
    /// no timed stage (the cancellation notice).
    pub fn from_ledger_stage(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.ledger_stage() == s)
    }

    /// How long a patient who got this stage's message is not sent it again for another
    /// booking: cancellation recovery goes to a patient at most once per period.
    pub fn patient_exclusive_period(self) -> Option<chrono::Duration> {
        match self {
            Stage::CancellationRecovery => Some(RECOVERY_EXCLUSIVE_PERIOD),
            Stage::ConfirmationRecovery
            | Stage::Reminder24h
            | Stage::Reminder1h
            | Stage::IntroFollowup
            | Stage::SessionFollowup => None,
        }
    }
}

/// Cancellation recovery's per-patient period (see [`Stage::patient_exclusive_period`]).
pub const RECOVERY_EXCLUSIVE_PERIOD: chrono::Duration = chrono::Duration::hours(72);

/// The `cal_bookings` column that a sent message of `stage` to `role` sets, if any: the
/// confirmation stage marks the patient's and the therapist's message apart, QA copies mark
/// nothing, every other stage has one column for the booking.
pub fn mark_column(stage: Stage, role: RecipientRole) -> Option<&'static str> {
    match (stage, role) {
        (_, RecipientRole::Qa) => None,
        (Stage::ConfirmationRecovery, RecipientRole::Patient) => {
            Some("client_confirmation_sent_at")
        }
        (Stage::ConfirmationRecovery, RecipientRole::Therapist) => {
            Some("therapist_notification_sent_at")
        }
        (other, RecipientRole::Patient | RecipientRole::Therapist) => Some(other.mark_column()),
    }
}

/// Ledger stage of the booking confirmation and therapist notice (webhook and recovery).
pub const CONFIRMATION_LEDGER_STAGE: &str = "confirmation";

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "email" => Some(Channel::Email),
            "sms" => Some(Channel::Sms),
            _ => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecipientRole {
    Patient,
    Therapist,
    /// Webhook confirmations of test bookings, redirected to `QA_NOTIFY_EMAIL`.
    Qa,
}

impl RecipientRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientRole::Patient => "patient",
            RecipientRole::Therapist => "therapist",
            RecipientRole::Qa => "qa",
        }
    }
    pub fn parse(s: &str) -> Option<RecipientRole> {
        match s {
            "patient" => Some(RecipientRole::Patient),
            "therapist" => Some(RecipientRole::Therapist),
            "qa" => Some(RecipientRole::Qa),
            _ => None,
        }
    }
}

impl fmt::Display for RecipientRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of one row of `journey_deliveries`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Claimed; the provider may or may not have been called yet.
    Sending,
    Sent,
    /// Transient failure: a later run inside the window tries again.
    Retry,
    /// Permanent failure: never tried again automatically.
    Failed,
    Skipped,
    /// A run died (or the provider's answer was lost) after the message may have left.
    /// Never resent automatically; `journeyctl resolve` settles it.
    InDoubt,
    /// A `retry` whose window closed before it could be sent: terminal, raised by `status`
    /// and listed by `audit`.
    Expired,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Retry => "retry",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
            DeliveryStatus::InDoubt => "in_doubt",
            DeliveryStatus::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        match s {
            "sending" => Some(DeliveryStatus::Sending),
            "sent" => Some(DeliveryStatus::Sent),
            "retry" => Some(DeliveryStatus::Retry),
            "failed" => Some(DeliveryStatus::Failed),
            "skipped" => Some(DeliveryStatus::Skipped),
            "in_doubt" => Some(DeliveryStatus::InDoubt),
            "expired" => Some(DeliveryStatus::Expired),
            _ => None,
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `cal_bookings.booking_kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BookingKind {
    Intro,
    FullSession,
}

impl BookingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingKind::Intro => "intro",
            BookingKind::FullSession => "full_session",
        }
    }
    pub fn parse(s: &str) -> Option<BookingKind> {
        match s {
            "intro" => Some(BookingKind::Intro),
            "full_session" => Some(BookingKind::FullSession),
            _ => None,
        }
    }
}

/// Every message the journey sends. The template file names and the `email_sent.kind`
/// property derive from this one enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    ClientConfirmation,
    TherapistNotification,
    Reminder24h,
    Reminder1h,
    IntroFollowup,
    SessionFollowup,
    CancellationRecovery,
    /// The session the patient got an invite for is cancelled: a short notice carrying the
    /// invite's `METHOD:CANCEL`.
    CancellationNotice,
}

impl MessageKind {
    pub const ALL: [MessageKind; 8] = [
        MessageKind::ClientConfirmation,
        MessageKind::TherapistNotification,
        MessageKind::Reminder24h,
        MessageKind::Reminder1h,
        MessageKind::IntroFollowup,
        MessageKind::SessionFollowup,
        MessageKind::CancellationRecovery,
        MessageKind::CancellationNotice,
    ];

    /// `properties.kind` of the `email_sent` event.
    pub fn event_kind(self) -> &'static str {
        match self {
            MessageKind::ClientConfirmation => "cal_booking_client_confirmation",
            MessageKind::TherapistNotification => "cal_booking_therapist_notification",
            MessageKind::Reminder24h => "cal_booking_reminder_24h",
            MessageKind::Reminder1h => "cal_booking_reminder_1h",
            MessageKind::IntroFollowup => "cal_intro_followup",
            MessageKind::SessionFollowup => "cal_session_followup",
            MessageKind::CancellationRecovery => "cancellation_recovery",
            MessageKind::CancellationNotice => "cal_booking_cancellation_notice",
        }
    }

    /// Base name of the template files: `templates/{name}.subject.hbs`, `.html.hbs`, `.txt.hbs`,
    /// and `.sms.hbs` for kinds that also go out by SMS.
    pub fn template_name(self) -> &'static str {
        match self {
            MessageKind::ClientConfirmation => "client_confirmation",
            MessageKind::TherapistNotification => "therapist_notification",
            MessageKind::Reminder24h => "reminder_24h",
            MessageKind::Reminder1h => "reminder_1h",
            MessageKind::IntroFollowup => "intro_followup",
            MessageKind::SessionFollowup => "session_followup",
            MessageKind::CancellationRecovery => "cancellation_recovery",
            MessageKind::CancellationNotice => "cancellation_notice",
        }
    }

    /// Whether this message also has an SMS form.
    pub fn has_sms(self) -> bool {
        matches!(self, MessageKind::Reminder24h | MessageKind::Reminder1h)
    }

    /// Whether this message advertises (invites to book again), so it must carry an opt-out
    /// (UWG §7(3)); the others are transactional.
    pub fn advertises(self) -> bool {
        match self {
            MessageKind::IntroFollowup
            | MessageKind::SessionFollowup
            | MessageKind::CancellationRecovery => true,
            MessageKind::ClientConfirmation
            | MessageKind::TherapistNotification
            | MessageKind::Reminder24h
            | MessageKind::Reminder1h
            | MessageKind::CancellationNotice => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_is_found_by_its_names_and_its_ledger_stage() {
        for stage in Stage::ALL {
            assert_eq!(Stage::parse(stage.as_str()), Some(stage));
            assert_eq!(Stage::parse(stage.command()), Some(stage));
            assert_eq!(Stage::from_ledger_stage(stage.ledger_stage()), Some(stage));
        }
        assert_eq!(
            Stage::from_ledger_stage(CONFIRMATION_LEDGER_STAGE),
            Some(Stage::ConfirmationRecovery)
        );
        assert_eq!(Stage::from_ledger_stage("cancellation_notice"), None);
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
        use RecipientRole::*;
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
        }
        assert_eq!(
            mark_column(Stage::Reminder1h, Patient),
            Some("reminder_1h_sent_at")
        );
    }

    #[test]
    fn only_cancellation_recovery_is_exclusive_per_patient_for_72_hours() {
        for stage in Stage::ALL {
            let expected =
                (stage == Stage::CancellationRecovery).then(|| chrono::Duration::hours(72));
            assert_eq!(stage.patient_exclusive_period(), expected, "{stage}");
        }
    }
}
