//! The cancellation notice: a patient who got a calendar invite for a session that is then
//! cancelled gets a short email carrying the invite's `METHOD:CANCEL` (same UID, higher
//! SEQUENCE), so the entry leaves their calendar (RFC 5546).
//!
//! Not a timed stage: the webhook's path calls `driver::notify_cancellation` right after a
//! BOOKING_CANCELLED is committed. It goes through the delivery ledger under its own ledger
//! stage, [`LEDGER_STAGE`], keyed by booking, stage, channel and role, so it goes out once
//! however often the cancellation arrives. This file holds the rule alone (pure); the
//! driver claims, renders, sends and records.

use super::plan::{base_context, MessagePlan, Outgoing, Plan, PlanInput, Recipient};
use crate::domain::{BookingStatus, Counter, EmailAddress, MessageKind, RecipientRole};

/// `journey_deliveries.stage` of the cancellation notice.
pub const LEDGER_STAGE: &str = "cancellation_notice";

/// Who gets the notice: the patient of a cancelled, non-test booking whose confirmation (with
/// its invite) went out, at their usable email (the people row's, else, for a walk-in
/// attendee without one, the payload's).
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let b = input.booking;
    let cancelled = b
        .status
        .as_deref()
        .is_some_and(|s| BookingStatus::parse(s) == Ok(BookingStatus::Cancelled));
    if !cancelled {
        return Plan::skip(Counter::SkippedInactive, "booking is not cancelled");
    }
    if b.is_test || input.patient.is_some_and(|p| p.is_test) {
        return Plan::skip(Counter::SkippedTest, "test booking");
    }
    if b.client_confirmation_sent_at.is_none() {
        return Plan::skip(
            Counter::SkippedInactive,
            "the patient never got an invite to take back",
        );
    }
    let Some(mut context) = base_context(input, input.patient) else {
        return Plan::skip(Counter::SkippedInactive, "booking has no start time");
    };
    // The people row, else (a walk-in who booked on Cal.com directly) the payload's attendee.
    let Some(who) = input.patient.or(input.attendee) else {
        return Plan::skip(
            Counter::SkippedNoPatient,
            "booking has no patient or attendee",
        );
    };
    let (email, name) = (who.email.as_deref(), who.name.clone());
    let Some(email) = email.and_then(|e| EmailAddress::parse(e).ok()) else {
        return Plan::skip(Counter::SkippedNoContact, "patient has no usable email");
    };
    if context.patient_name.is_none() {
        context.patient_name = name.clone().filter(|n| !n.trim().is_empty());
    }
    Plan::Messages(vec![MessagePlan::Send(Box::new(Outgoing {
        role: RecipientRole::Patient,
        kind: MessageKind::CancellationNotice,
        to: Recipient::Email(email),
        to_name: name,
        context,
        invite: true,
        carries_copy_of: None,
    }))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::bookings::{DueBooking, PatientRow};
    use chrono::{DateTime, Duration, Utc};
    use uuid::Uuid;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn booking() -> DueBooking {
        let start = at("2026-03-12T15:00:00Z");
        DueBooking {
            id: Uuid::new_v4(),
            cal_uid: "uid-1".into(),
            status: Some("cancelled".into()),
            is_test: false,
            start_time: Some(start),
            end_time: Some(start + Duration::minutes(50)),
            booking_kind: Some("full_session".into()),
            video_url: None,
            location: None,
            ical_sequence: None,
            patient_id: Some(Uuid::new_v4()),
            therapist_id: None,
            match_id: None,
            request_reschedule: false,
            rescheduled_from_uid: None,
            client_confirmation_sent_at: Some(at("2026-03-09T15:00:00Z")),
            therapist_notification_sent_at: None,
            stage_mark: None,
            therapist: None,
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
            attendee_email: Some("walk.in@example.de".into()),
            attendee_name: Some("Walk In".into()),
            attendee_phone: None,
        }
    }

    fn patient(email: Option<&str>) -> PatientRow {
        PatientRow {
            id: Some(Uuid::new_v4()),
            name: Some("Jonas Weber".into()),
            email: email.map(str::to_string),
            phone_number: None,
            is_test: false,
        }
    }

    fn decide(b: &DueBooking, p: Option<&PatientRow>) -> Plan {
        let settings = crate::config::Settings::from_args(&Default::default()).unwrap();
        let attendee = PatientRow::attendee_of(b);
        plan(&PlanInput {
            booking: b,
            patient: p,
            attendee: attendee.as_ref(),
            settings: &settings,
            now: at("2026-03-10T09:00:00Z"),
            sms_enabled: false,
        })
    }

    fn sent_to(plan: &Plan) -> Option<String> {
        match plan {
            Plan::Messages(m) => match m.as_slice() {
                [MessagePlan::Send(out)] => match &out.to {
                    Recipient::Email(e) => Some(e.as_str().to_string()),
                    Recipient::Sms(_) => None,
                },
                _ => None,
            },
            Plan::Skip { .. } => None,
        }
    }

    #[test]
    fn only_a_cancelled_invited_real_patient_with_an_email_gets_the_notice() {
        let p = patient(Some("jonas.weber@example.de"));
        let b = booking();
        assert_eq!(
            sent_to(&decide(&b, Some(&p))).as_deref(),
            Some("jonas.weber@example.de")
        );
        // A walk-in attendee without a people row: the payload's address.
        let mut walk_in = booking();
        walk_in.patient_id = None;
        assert_eq!(
            sent_to(&decide(&walk_in, None)).as_deref(),
            Some("walk.in@example.de")
        );

        let mut never_invited = booking();
        never_invited.client_confirmation_sent_at = None;
        let mut test = booking();
        test.is_test = true;
        let mut active = booking();
        active.status = Some("ACCEPTED".into());
        for b in [never_invited, test, active] {
            assert!(sent_to(&decide(&b, Some(&p))).is_none(), "{b:?}");
        }
        let no_email = patient(Some("temp_123@example.de"));
        assert!(matches!(
            decide(&booking(), Some(&no_email)),
            Plan::Skip {
                counter: Counter::SkippedNoContact,
                ..
            }
        ));
    }
}
