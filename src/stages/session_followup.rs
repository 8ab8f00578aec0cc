//! `session-followup`: its facts ([`FACTS`]) and its rule. Days after a full session, one
//! email to the patient with a pre-filled link to book the next one, once the therapist has
//! free slots, unless the patient already booked again.

use chrono::Duration;

use super::followups;
use super::plan::{base_context, check_patient, patient_email, Plan, PlanInput};
use crate::domain::{
    Anchor, BookingKind, Counter, LedgerStage, MessageKind, RowFacts, Selection, StageFacts,
    StatusRule,
};

/// Full sessions that ended 3 to 5 days ago and did not fall through.
pub(crate) const FACTS: StageFacts = StageFacts {
    name: "session_followup",
    command: "session-followup",
    help: "Invite patients whose full session ended 3-5 days ago to book the next one",
    ledger_stage: LedgerStage::SessionFollowup,
    window: (Duration::days(-5), Duration::days(-3)),
    cadence: Duration::minutes(30),
    mark_column: "session_followup_sent_at",
    therapist_mark_column: None,
    patient_exclusive_period: None,
    selection: Selection {
        anchor: Anchor::EndTime,
        statuses: StatusRule::NotFellThrough,
        booking_kind: Some(BookingKind::FullSession),
        needs_therapist: false,
        row_facts: RowFacts::RebookedWithTherapist,
    },
    kinds: &[MessageKind::SessionFollowup],
    miss_detail: "never sent: the therapist may have had no free slots during the window",
};

pub(crate) fn plan(input: &PlanInput<'_>) -> Plan {
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
    followups::with_booking_link(input, "session_followup_email", &mut ctx);
    patient_email(patient, MessageKind::SessionFollowup, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::fixtures::{sendable, skip_of, skipped};

    #[test]
    fn a_session_followup_waits_for_free_slots_and_ends_when_the_patient_rebooked() {
        let mut case = sendable();
        case.booking.future_any_with_therapist = true;
        let (counter, mark, again, _) = skip_of(&case.decide(plan)).unwrap();
        assert_eq!(
            (counter, mark, again),
            (Counter::SkippedAlreadyBooked, true, false)
        );
        for slots in [None, Some(0), Some(-1)] {
            let mut case = sendable();
            case.booking.full_slots_count = slots;
            let (counter, mark, again, _) = skip_of(&case.decide(plan)).unwrap();
            assert_eq!(
                (counter, mark, again),
                (Counter::SkippedNoAvailability, false, true),
                "{slots:?}: decided again by a later run inside the window"
            );
        }
        // Already rebooked wins over no slots.
        let mut case = sendable();
        case.booking.future_any_with_therapist = true;
        case.booking.full_slots_count = None;
        assert_eq!(skipped(&case.decide(plan)), Counter::SkippedAlreadyBooked);
    }
}
