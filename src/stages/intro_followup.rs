//! `intro-followup`: its facts ([`FACTS`]) and its rule. After an intro call, one email to
//! the patient with a pre-filled link to book a full session with the same therapist, unless
//! they already did. Decided from the selected row; the selection computed whether the patient
//! booked again ([`RowFacts::RebookedWithTherapist`]).

use chrono::Duration;

use super::followups;
use super::plan::{base_context, check_patient, patient_email, Plan, PlanInput};
use crate::domain::{
    Anchor, BookingKind, Counter, LedgerStage, MessageKind, RowFacts, Selection, StageFacts,
    StatusRule,
};

/// Intros that ended 10 to 30 minutes ago and did not fall through.
pub(crate) const FACTS: StageFacts = StageFacts {
    name: "intro_followup",
    command: "intro-followup",
    help: "Follow up intro sessions that ended 10-30 minutes ago (booking link, next free slot)",
    ledger_stage: LedgerStage::IntroFollowup,
    window: (Duration::minutes(-30), Duration::minutes(-10)),
    cadence: Duration::minutes(5),
    mark_column: "followup_sent_at",
    therapist_mark_column: None,
    patient_exclusive_period: None,
    selection: Selection {
        anchor: Anchor::EndTime,
        statuses: StatusRule::NotFellThrough,
        booking_kind: Some(BookingKind::Intro),
        needs_therapist: false,
        row_facts: RowFacts::RebookedWithTherapist,
    },
    kinds: &[MessageKind::IntroFollowup],
    miss_detail: "never selected or sent",
};

pub(crate) fn plan(input: &PlanInput<'_>) -> Plan {
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
    followups::with_booking_link(input, "intro_followup_email", &mut ctx);
    patient_email(patient, MessageKind::IntroFollowup, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::fixtures::{only_email, sendable, skip_of, skipped};

    #[test]
    fn an_intro_whose_patient_booked_a_full_session_is_done() {
        let mut case = sendable();
        case.booking.future_full_with_therapist = true;
        let (counter, mark, again, _) = skip_of(&case.decide(plan)).unwrap();
        assert_eq!(
            (counter, mark, again),
            (Counter::SkippedAlreadyBooked, true, false)
        );
        // Another kind of future booking does not stop the intro followup.
        let mut case = sendable();
        case.booking.future_any_with_therapist = true;
        only_email(&case.decide(plan));
        // The test rule comes first.
        let mut case = sendable();
        case.booking.future_full_with_therapist = true;
        case.booking.is_test = true;
        assert_eq!(skipped(&case.decide(plan)), Counter::SkippedTest);
    }
}
