//! The journey's stages and the types that describe one: [`StageFacts`] (its names, window,
//! cadence, mark columns, per-patient period, message kinds) and [`Selection`] (which bookings
//! it looks at, as a value the `db` layer turns into SQL). The values themselves live one per
//! stage in `src/stages/<stage>.rs` and are found by `Stage::facts` (in `stages`); `audit`,
//! `status`, the selection and the schedule proof read them there. See docs/ARCHITECTURE.md.
//! Also the small enums every delivery is described by (channel, recipient role, delivery
//! status, message kind).

use std::fmt;

use chrono::Duration;

use super::LedgerStage;

/// A stage of the journey as an operator runs it (one subcommand each). Its facts are in
/// `src/stages/<stage>.rs` (see `Stage::facts`).
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

    /// The stage named by its report id (`reminder_1h`) or its subcommand (`reminder-1h`).
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
}

/// Everything that is true of one timed stage. Each stage file under `src/stages/` holds its
/// one `FACTS` value; nothing else types these facts a second time.
#[derive(Debug)]
pub struct StageFacts {
    /// The stage id used in reports, `journey_runs` and events.
    pub name: &'static str,
    /// The subcommand name.
    pub command: &'static str,
    /// What the subcommand does, one line for `--help`.
    pub help: &'static str,
    /// The value of `journey_deliveries.stage`. The webhook's confirmations and confirmation
    /// recovery share one ledger stage so that one can never duplicate the other.
    pub ledger_stage: LedgerStage,
    /// Default selection window, as offsets from `now` (earlier, later) on the selection's
    /// [`Anchor`]. Never narrower than [`StageFacts::cadence`].
    pub window: (Duration, Duration),
    /// How often the shipped schedule (crontab.example, systemd/) runs this stage. Never longer
    /// than the window, or bookings fall between two runs.
    pub cadence: Duration,
    /// The `cal_bookings` column that marks this stage done (for the patient).
    pub mark_column: &'static str,
    /// The therapist's own mark column, when the stage writes to the therapist apart from the
    /// patient (confirmation); `None`: a therapist's message marks [`StageFacts::mark_column`].
    pub therapist_mark_column: Option<&'static str>,
    /// How long a patient who got this stage's message is not sent it again for another
    /// booking (`None`: no such limit).
    pub patient_exclusive_period: Option<Duration>,
    /// Which bookings the stage looks at.
    pub selection: Selection,
    /// The messages the stage sends.
    pub kinds: &'static [MessageKind],
    /// What `audit` says of a booking in a closed window that has no recorded outcome.
    pub miss_detail: &'static str,
}

impl StageFacts {
    /// The `cal_bookings` column that a sent message to `role` sets, if any: QA copies mark
    /// nothing; a stage with a therapist column marks the therapist apart.
    pub fn mark_of(&self, role: RecipientRole) -> Option<&'static str> {
        match role {
            RecipientRole::Qa => None,
            RecipientRole::Patient => Some(self.mark_column),
            RecipientRole::Therapist => {
                Some(self.therapist_mark_column.unwrap_or(self.mark_column))
            }
        }
    }

    /// The recipients a booking-level decision (a skip of the whole booking) is recorded for.
    pub fn booking_roles(&self) -> &'static [RecipientRole] {
        match self.therapist_mark_column {
            Some(_) => &[RecipientRole::Patient, RecipientRole::Therapist],
            None => &[RecipientRole::Patient],
        }
    }

    /// Whether any of the stage's messages also goes out by SMS (and can be held by quiet
    /// hours past the window).
    pub fn sends_sms(&self) -> bool {
        self.kinds.iter().any(|k| k.has_sms())
    }
}

/// Which bookings a stage looks at, as a value: `db::bookings` turns it into SQL (the window
/// bound as parameters), `db::reports::audit` into its eligibility. No SQL text here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The booking time the window is placed on.
    pub anchor: Anchor,
    /// Which booking statuses are due.
    pub statuses: StatusRule,
    /// Only bookings of this kind (`None`: any).
    pub booking_kind: Option<BookingKind>,
    /// Only bookings with a therapist.
    pub needs_therapist: bool,
    /// The facts about the patient's other bookings the selection computes for the rules.
    pub row_facts: RowFacts,
}

/// The booking time a stage's window is placed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// No look-back: every booking created before the window's end whose session is still
    /// ahead (the window's start only states the width the schedule proof checks).
    CreatedWhileSessionAhead,
    /// `start_time`, looking ahead.
    StartTime,
    /// `end_time`, looking back.
    EndTime,
    /// `cancelled_at`, looking back.
    CancelledAt,
}

impl Anchor {
    /// Whether the window lies behind `now` (followups, recoveries) or ahead (reminders).
    pub fn looks_back(self) -> bool {
        match self {
            Anchor::StartTime => false,
            Anchor::CreatedWhileSessionAhead | Anchor::EndTime | Anchor::CancelledAt => true,
        }
    }
}

/// Which booking statuses a stage is due for (see [`super::BookingStatus`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusRule {
    /// Will take place (PENDING is not active: the host has not accepted yet).
    Active,
    /// Did not fall through (took place or may have).
    NotFellThrough,
    /// Cancelled.
    Cancelled,
}

/// Facts about a patient's other bookings and matches that the selection computes once per
/// row, so the rules never query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFacts {
    None,
    /// Another future, active booking of this patient with the same therapist.
    RebookedWithTherapist,
    /// Other successful bookings, other matches, a recent message of this stage.
    RecoveryHistory,
}

/// The `cal_bookings` column that a sent message of `stage` to `role` sets, if any (see
/// [`StageFacts::mark_of`]).
pub fn mark_column(stage: Stage, role: RecipientRole) -> Option<&'static str> {
    stage.facts().mark_of(role)
}

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
