//! After the session: intro followup, session followup and cancellation recovery (SPEC §1).
//! Pure decisions from the selected row; patient-level facts (already booked, other matches,
//! recently recovered) were computed by the selection query.

use super::plan::{base_context, check_patient, patient_email, Plan, PlanInput};
use crate::domain::{Counter, MessageKind};

fn with_booking_link(
    input: &PlanInput<'_>,
    source: &str,
    ctx: &mut crate::templates::MessageContext,
) {
    let b = input.booking;
    let (Some(therapist_id), Some(patient_id)) = (b.therapist_id, b.patient_id) else {
        return;
    };
    let Some(username) = b.therapist.as_ref().and_then(|t| t.cal_username.as_deref()) else {
        return;
    };
    let patient = input.patient;
    ctx.booking_link = Some(crate::links::booking_link(
        &input.settings.cal_origin,
        username,
        therapist_id,
        patient_id,
        b.match_id,
        source,
        patient.and_then(|p| p.name.as_deref()),
        patient.and_then(|p| p.email.as_deref()),
    ));
}

pub fn intro(input: &PlanInput<'_>) -> Plan {
    let patient = match check_patient(input) {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    if input.booking.future_full_with_therapist {
        return Plan::skip_and_mark(
            Counter::SkippedAlreadyBooked,
            "patient already booked a full session with this therapist",
        );
    }
    let Some(mut ctx) = base_context(input, Some(patient)) else {
        return Plan::skip(Counter::SkippedInactive, "booking has no start time");
    };
    with_booking_link(input, "intro_followup_email", &mut ctx);
    patient_email(patient, MessageKind::IntroFollowup, ctx)
}

pub fn session(input: &PlanInput<'_>) -> Plan {
    let patient = match check_patient(input) {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    if input.booking.future_any_with_therapist {
        return Plan::skip_and_mark(
            Counter::SkippedAlreadyBooked,
            "patient already has a future booking with this therapist",
        );
    }
    if input.booking.full_slots_count.unwrap_or(0) <= 0 {
        // Not decided: slots may appear later inside the window.
        return Plan::skip_for_now(
            Counter::SkippedNoAvailability,
            "therapist has no free full-session slots",
        );
    }
    let Some(mut ctx) = base_context(input, Some(patient)) else {
        return Plan::skip(Counter::SkippedInactive, "booking has no start time");
    };
    with_booking_link(input, "session_followup_email", &mut ctx);
    patient_email(patient, MessageKind::SessionFollowup, ctx)
}

pub fn cancellation(input: &PlanInput<'_>) -> Plan {
    let b = input.booking;
    if b.request_reschedule {
        // Not a lost patient: the therapist wants a new date with them.
        return Plan::skip_and_mark(
            Counter::SkippedInactive,
            "therapist asked the patient to reschedule",
        );
    }
    let patient = match check_patient(input) {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    if b.has_successful_booking {
        // Recovered on their own, or an established patient who cancelled once: not lost.
        return Plan::skip_and_mark(
            Counter::SkippedHasSuccessfulBooking,
            "patient has another successful booking (ahead, or a session that took place)",
        );
    }
    if b.recently_recovered {
        return Plan::skip_and_mark(
            Counter::SkippedRecentlyRecovered,
            "patient got a recovery email in the last 72 hours",
        );
    }
    if b.other_matched_therapists <= 0 {
        return Plan::skip_and_mark(
            Counter::SkippedNoOtherMatches,
            "patient has no match with another therapist",
        );
    }
    let Some(mut ctx) = base_context(input, Some(patient)) else {
        return Plan::skip(Counter::SkippedInactive, "booking has no start time");
    };
    ctx.other_therapists_count = Some(b.other_matched_therapists);
    patient_email(patient, MessageKind::CancellationRecovery, ctx)
}
