//! Test fixtures for the unit tests of the stage rules: a booking, a patient and settings as
//! the selection would hand them to a rule, and helpers that read a [`Plan`] back. Test-only
//! (`#[cfg(test)]`); no PostgreSQL. When `DueBooking` grows a field, add it here once.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::plan::{Message, MessagePlan, Plan, PlanInput, Recipient};
use crate::config::Settings;
use crate::db::bookings::{DueBooking, PatientRow, TherapistInfo};
use crate::domain::{Channel, Counter, RecipientRole};

pub(crate) fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The instant every rule is judged against: Tuesday 10 March 2026, 10:00 in Berlin.
pub(crate) fn now() -> DateTime<Utc> {
    at("2026-03-10T09:00:00Z")
}

pub(crate) const PATIENT_EMAIL: &str = "jonas.weber@example.de";
pub(crate) const PATIENT_PHONE: &str = "+4915112345678";
pub(crate) const THERAPIST_EMAIL: &str = "lena.brandt@example.de";

/// An accepted, real full session tomorrow afternoon (Berlin), with a patient row, a
/// therapist who has an email and a Cal.com username, and nothing sent yet.
pub(crate) fn booking() -> DueBooking {
    let start = at("2026-03-11T14:00:00Z");
    DueBooking {
        id: Uuid::from_u128(1),
        cal_uid: "uid-1".into(),
        status: Some("ACCEPTED".into()),
        is_test: false,
        start_time: Some(start),
        end_time: Some(start + Duration::minutes(50)),
        booking_kind: Some("full_session".into()),
        video_url: None,
        location: None,
        ical_sequence: None,
        patient_id: Some(Uuid::from_u128(2)),
        therapist_id: Some(Uuid::from_u128(3)),
        match_id: Some(Uuid::from_u128(4)),
        request_reschedule: false,
        rescheduled_from_uid: None,
        client_confirmation_sent_at: None,
        therapist_notification_sent_at: None,
        stage_mark: None,
        therapist: Some(TherapistInfo {
            first_name: Some("Lena".into()),
            last_name: Some("Brandt".into()),
            email: Some(THERAPIST_EMAIL.into()),
            cal_username: Some("lena-brandt".into()),
        }),
        future_full_with_therapist: false,
        future_any_with_therapist: false,
        has_successful_booking: false,
        other_matched_therapists: 0,
        recently_recovered: false,
        full_slots_count: None,
        next_full_time: None,
        slots_cached_at: None,
        match_secure_uuid: None,
        ical_uid: None,
        attendee_email: None,
        attendee_name: None,
        attendee_phone: None,
    }
}

/// The same booking made on Cal.com directly: no patient row, the payload's attendee.
pub(crate) fn walk_in() -> DueBooking {
    DueBooking {
        patient_id: None,
        attendee_email: Some("walk.in@example.de".into()),
        attendee_name: Some("Mia Walk".into()),
        attendee_phone: Some("+4915199999999".into()),
        ..booking()
    }
}

/// A real patient with a usable email and a valid mobile number.
pub(crate) fn patient() -> PatientRow {
    PatientRow {
        id: Some(Uuid::from_u128(2)),
        name: Some("Jonas Weber".into()),
        email: Some(PATIENT_EMAIL.into()),
        phone_number: Some(PATIENT_PHONE.into()),
        is_test: false,
    }
}

/// Settings as with no environment at all (Europe/Berlin, no QA address, no site URL).
pub(crate) fn settings() -> Settings {
    Settings::from_args(&Default::default()).unwrap()
}

/// One rule's inputs, owned; [`Case::decide`] lends them to a rule as a [`PlanInput`].
pub(crate) struct Case {
    pub booking: DueBooking,
    pub patient: Option<PatientRow>,
    pub settings: Settings,
    pub now: DateTime<Utc>,
    pub sms_enabled: bool,
}

impl Case {
    /// [`booking`] with [`patient`], SMS enabled.
    pub(crate) fn new() -> Case {
        Case {
            booking: booking(),
            patient: Some(patient()),
            settings: settings(),
            now: now(),
            sms_enabled: true,
        }
    }

    /// A walk-in booking ([`walk_in`]): no patient row.
    pub(crate) fn walk_in() -> Case {
        Case {
            booking: walk_in(),
            patient: None,
            ..Case::new()
        }
    }

    /// Runs a rule; the attendee is derived from the booking as the driver does.
    pub(crate) fn decide(&self, rule: impl Fn(&PlanInput<'_>) -> Plan) -> Plan {
        let attendee = PatientRow::attendee_of(&self.booking);
        rule(&PlanInput {
            booking: &self.booking,
            patient: self.patient.as_ref(),
            attendee: attendee.as_ref(),
            settings: &self.settings,
            now: self.now,
            sms_enabled: self.sms_enabled,
        })
    }
}

/// A booking-level skip, read back: (counter, mark, again, reason).
pub(crate) fn skip_of(plan: &Plan) -> Option<(Counter, bool, bool, &'static str)> {
    match plan {
        Plan::Skip {
            counter,
            mark,
            again,
            reason,
        } => Some((*counter, *mark, *again, reason)),
        Plan::Messages(_) => None,
    }
}

/// The counter of a booking-level skip; panics (failing the test) on messages.
pub(crate) fn skipped(plan: &Plan) -> Counter {
    match skip_of(plan) {
        Some((counter, ..)) => counter,
        None => panic!("expected a skip, got {plan:?}"),
    }
}

/// The messages a plan sends.
pub(crate) fn sends(plan: &Plan) -> Vec<&Message> {
    match plan {
        Plan::Messages(m) => m
            .iter()
            .filter_map(|m| match m {
                MessagePlan::Send(out) => Some(&**out),
                MessagePlan::Skip { .. } => None,
            })
            .collect(),
        Plan::Skip { .. } => Vec::new(),
    }
}

/// The messages a plan sends as (role, channel, address), in order.
pub(crate) fn addressed(plan: &Plan) -> Vec<(RecipientRole, Channel, String)> {
    sends(plan)
        .into_iter()
        .map(|o| {
            let address = match &o.to {
                Recipient::Email(e) => e.as_str().to_string(),
                Recipient::Sms(p) => p.as_str().to_string(),
            };
            (o.role, o.to.channel(), address)
        })
        .collect()
}

/// The per-message skips of a plan as (role, channel, counter).
pub(crate) fn message_skips(plan: &Plan) -> Vec<(RecipientRole, Channel, Counter)> {
    match plan {
        Plan::Messages(m) => m
            .iter()
            .filter_map(|m| match m {
                MessagePlan::Skip {
                    channel,
                    role,
                    counter,
                    ..
                } => Some((*role, *channel, *counter)),
                MessagePlan::Send(_) => None,
            })
            .collect(),
        Plan::Skip { .. } => Vec::new(),
    }
}

/// A case each rule after the session would send for: an intro for `intro`, free slots for `session`,
/// another match for `cancellation`.
pub(crate) fn sendable() -> Case {
    let mut case = Case::new();
    case.booking.booking_kind = Some("intro".into());
    case.booking.full_slots_count = Some(3);
    case.booking.other_matched_therapists = 2;
    case.booking.status = Some("CANCELLED".into());
    case
}

pub(crate) fn only_email(plan: &Plan) {
    assert_eq!(
        addressed(plan),
        [(
            RecipientRole::Patient,
            Channel::Email,
            PATIENT_EMAIL.to_string()
        )],
        "followups are email only, never SMS"
    );
}
