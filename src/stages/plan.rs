//! What a stage decides for one booking, before anything is claimed or sent. Stage rule files
//! produce these values from rows alone (pure functions); the driver acts on them.
//!
//! The words for "a message", from decision to ledger, used across `src/stages/`:
//! - a [`Plan`] is a stage's decision for one booking: skip it, or these message plans;
//! - a [`MessagePlan`] is the decision for one message of it: send, or skip with a reason;
//! - a [`Message`] is what is sent: kind, recipient, template context;
//! - a `Delivery` (`stages::deliver`) is a message bound to its ledger key, claimed, sent
//!   and recorded; what one delivery did to the run's counters is its `Tally`;
//! - a `PlannedMessage` (`stages::report`) is a message a dry run lists instead of sending.

use chrono::{DateTime, Duration, Utc};

use crate::config::Settings;
use crate::db::bookings::{DueBooking, PatientRow};
use crate::domain::{
    BookingKind, Channel, Counter, EmailAddress, MessageKind, PhoneNumber, RecipientRole,
};
pub(crate) use crate::notify::Recipient;
use crate::templates::MessageContext;

/// Everything a rule may look at.
pub(crate) struct PlanInput<'a> {
    pub booking: &'a DueBooking,
    pub patient: Option<&'a PatientRow>,
    /// A booking without a patient row: its attendee as the payload named them (walk-in).
    pub attendee: Option<&'a PatientRow>,
    pub settings: &'a Settings,
    pub now: DateTime<Utc>,
    pub sms_enabled: bool,
}

/// One message to send.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    pub role: RecipientRole,
    pub kind: MessageKind,
    pub to: Recipient,
    pub to_name: Option<String>,
    pub context: MessageContext,
    /// Attach a calendar invite (confirmations).
    pub invite: bool,
    /// QA copies: this other message, rendered with the same context, travels in the same
    /// email (a test booking's therapist notice goes to QA with its patient confirmation).
    pub carries_copy_of: Option<MessageKind>,
}

/// One message of a booking: sent, or skipped with its counted reason.
#[derive(Clone, Debug)]
pub(crate) enum MessagePlan {
    Send(Box<Message>),
    Skip {
        channel: Channel,
        role: RecipientRole,
        counter: Counter,
        reason: &'static str,
    },
}

/// A stage's decision for one booking.
#[derive(Clone, Debug)]
pub(crate) enum Plan {
    /// Nothing is sent, counted under `counter`. Unless `again`, the decision is recorded in
    /// the ledger, so the booking is counted once and not selected again; `mark` also closes
    /// the stage column. With `again` nothing is recorded and a later run decides anew.
    Skip {
        counter: Counter,
        mark: bool,
        again: bool,
        reason: &'static str,
    },
    Messages(Vec<MessagePlan>),
}

impl Plan {
    /// Decided: recorded, counted once, not marked.
    pub(crate) fn skip(counter: Counter, reason: &'static str) -> Plan {
        Plan::Skip {
            counter,
            mark: false,
            again: false,
            reason,
        }
    }
    /// Decided, and the stage is done for this booking (its column is set).
    pub(crate) fn skip_and_mark(counter: Counter, reason: &'static str) -> Plan {
        Plan::Skip {
            counter,
            mark: true,
            again: false,
            reason,
        }
    }
    /// Not now: a later run inside the window decides again (nothing recorded).
    pub(crate) fn skip_for_now(counter: Counter, reason: &'static str) -> Plan {
        Plan::Skip {
            counter,
            mark: false,
            again: true,
            reason,
        }
    }
}

/// A patient's usable contacts.
pub(crate) struct Contacts {
    pub email: Option<EmailAddress>,
    pub phone: PhoneContact,
}

pub(crate) enum PhoneContact {
    None,
    Valid(PhoneNumber),
    Invalid,
}

pub(crate) fn contacts(p: &PatientRow) -> Contacts {
    let email = p.email.as_deref().and_then(|e| EmailAddress::parse(e).ok());
    let phone = match p.phone_number.as_deref().map(str::trim) {
        None | Some("") => PhoneContact::None,
        Some(raw) => match PhoneNumber::parse(raw) {
            Ok(n) => PhoneContact::Valid(n),
            Err(_) => PhoneContact::Invalid,
        },
    };
    Contacts { email, phone }
}

/// The shared first rules: test data is never sent to, a booking without its patient row is
/// counted, not guessed.
pub(crate) fn check_patient<'a>(input: &PlanInput<'a>) -> Result<&'a PatientRow, Plan> {
    if input.booking.is_test {
        return Err(Plan::skip(Counter::SkippedTest, "test booking"));
    }
    let Some(patient) = input.patient else {
        return Err(Plan::skip(
            Counter::SkippedNoPatient,
            "booking has no patient row",
        ));
    };
    if patient.is_test {
        return Err(Plan::skip(Counter::SkippedTest, "test patient"));
    }
    Ok(patient)
}

/// Like [`check_patient`], but a walk-in attendee (no patient row, contact from the payload)
/// also counts: confirmations and reminders reach them (README, "How a booking's status is decided").
pub(crate) fn check_recipient<'a>(input: &PlanInput<'a>) -> Result<&'a PatientRow, Plan> {
    match (input.patient, input.attendee) {
        (None, Some(attendee)) if !input.booking.is_test => Ok(attendee),
        _ => check_patient(input),
    }
}

pub(crate) const THERAPIST_FALLBACK_NAME: &str = "Ihre Therapeutin bzw. Ihr Therapeut";

/// How old the slot cache may be before its "next free slot" is not shown.
pub(crate) fn slot_cache_max_age() -> Duration {
    Duration::hours(6)
}

/// The template context shared by every message of a booking.
pub(crate) fn base_context(
    input: &PlanInput<'_>,
    patient: Option<&PatientRow>,
) -> Option<MessageContext> {
    let b = input.booking;
    let start = b.start_time?;
    let end = b.end_time.unwrap_or(start + Duration::minutes(50));
    let booking_kind = b
        .booking_kind
        .as_deref()
        .and_then(BookingKind::parse)
        .unwrap_or(BookingKind::FullSession);
    let fresh_slot = match (b.next_full_time, b.slots_cached_at) {
        (Some(slot), Some(cached))
            if slot > input.now && input.now - cached <= slot_cache_max_age() =>
        {
            Some(slot)
        }
        _ => None,
    };
    let match_link = match (&input.settings.public_base_url, b.match_secure_uuid) {
        (Some(base), Some(secure)) => Some(crate::links::match_link(base, secure)),
        (Some(base), None) => Some(format!("{base}/therapeuten")),
        (None, _) => None,
    };
    Some(MessageContext {
        patient_name: patient
            .and_then(|p| p.name.clone())
            .filter(|n| !n.trim().is_empty()),
        therapist_name: b
            .therapist
            .as_ref()
            .and_then(|t| t.display_name())
            .unwrap_or_else(|| THERAPIST_FALLBACK_NAME.to_string()),
        booking_kind,
        start,
        end,
        video_url: b.video_url.clone().filter(|v| !v.trim().is_empty()),
        location: b
            .location
            .clone()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("integrations:")),
        is_tomorrow: crate::domain::dates::is_tomorrow(input.now, start, input.settings.timezone),
        booking_link: None,
        match_link,
        next_slot: fresh_slot,
        other_therapists_count: None,
        cancelled_by_therapist: false,
        rescheduled: b.rescheduled_from_uid.is_some(),
        unsubscribe_url: None,
    })
}

/// Email plus SMS (when enabled) to the patient, or the counted reason why not (no usable
/// contact, a phone number that is not E.164).
pub(crate) fn patient_email_and_sms(
    input: &PlanInput<'_>,
    patient: &PatientRow,
    kind: MessageKind,
    context: MessageContext,
) -> Plan {
    let c = contacts(patient);
    let sms_usable = input.sms_enabled && kind.has_sms();
    let mut out = Vec::new();
    if let Some(email) = c.email.clone() {
        out.push(MessagePlan::Send(Box::new(Message {
            role: RecipientRole::Patient,
            kind,
            to: Recipient::Email(email),
            to_name: patient.name.clone(),
            context: context.clone(),
            invite: false,
            carries_copy_of: None,
        })));
    }
    if sms_usable {
        match &c.phone {
            PhoneContact::Valid(n) => out.push(MessagePlan::Send(Box::new(Message {
                role: RecipientRole::Patient,
                kind,
                to: Recipient::Sms(n.clone()),
                to_name: None,
                context,
                invite: false,
                carries_copy_of: None,
            }))),
            PhoneContact::Invalid => out.push(MessagePlan::Skip {
                channel: Channel::Sms,
                role: RecipientRole::Patient,
                counter: Counter::SkippedInvalidPhone,
                reason: "phone number is not E.164",
            }),
            PhoneContact::None => {}
        }
    }
    let sends = out.iter().any(|m| matches!(m, MessagePlan::Send(_)));
    if !sends && c.email.is_none() {
        return match (c.phone, sms_usable) {
            (PhoneContact::Invalid, true) => Plan::skip(
                Counter::SkippedInvalidPhone,
                "no email and the phone number is not E.164",
            ),
            _ => Plan::skip(Counter::SkippedNoContact, "no usable email or phone"),
        };
    }
    Plan::Messages(out)
}

/// Email only to the patient (followups and recovery).
pub(crate) fn patient_email(
    patient: &PatientRow,
    kind: MessageKind,
    context: MessageContext,
) -> Plan {
    match contacts(patient).email {
        Some(email) => Plan::Messages(vec![MessagePlan::Send(Box::new(Message {
            role: RecipientRole::Patient,
            kind,
            to: Recipient::Email(email),
            to_name: patient.name.clone(),
            context,
            invite: false,
            carries_copy_of: None,
        }))]),
        None => Plan::skip(Counter::SkippedNoContact, "no usable email"),
    }
}

#[cfg(test)]
mod channel_tests;
#[cfg(test)]
mod tests;
