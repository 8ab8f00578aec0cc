//! `cancellation-recovery`: its facts ([`FACTS`]) and its rule. Hours after a patient
//! cancelled, one email pointing to their other matches, unless they are not lost (a
//! reschedule request, another successful booking), were recovered recently, or have no other
//! match. The selection computed those facts ([`RowFacts::RecoveryHistory`]).

use chrono::Duration;

use super::plan::{base_context, check_patient, patient_email, Plan, PlanInput};
use crate::domain::{
    Anchor, Counter, LedgerStage, MessageKind, RowFacts, Selection, StageFacts, StatusRule,
};

/// A patient gets at most one recovery email per this period, whichever booking it is for
/// (a patient cancelling several sessions at once is written to once).
pub(crate) const PATIENT_EXCLUSIVE_PERIOD: Duration = Duration::hours(72);

/// Bookings cancelled 2 to 4 hours ago.
pub(crate) const FACTS: StageFacts = StageFacts {
    name: "cancellation_recovery",
    command: "cancellation-recovery",
    help: "Point patients whose booking was cancelled 2-4 hours ago to their other matches",
    ledger_stage: LedgerStage::CancellationRecovery,
    window: (Duration::hours(-4), Duration::hours(-2)),
    cadence: Duration::minutes(30),
    mark_column: "cancellation_recovery_sent_at",
    therapist_mark_column: None,
    patient_exclusive_period: Some(PATIENT_EXCLUSIVE_PERIOD),
    selection: Selection {
        anchor: Anchor::CancelledAt,
        statuses: StatusRule::Cancelled,
        booking_kind: None,
        needs_therapist: false,
        row_facts: RowFacts::RecoveryHistory,
    },
    kinds: &[MessageKind::CancellationRecovery],
    miss_detail: "never selected or sent",
};

pub(crate) fn plan(input: &PlanInput<'_>) -> Plan {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::fixtures::{only_email, sendable, skip_of};

    #[test]
    fn cancellation_recovery_skips_reschedules_recovered_and_matchless_patients_in_order() {
        let mut reschedule = sendable();
        reschedule.booking.request_reschedule = true;
        reschedule.booking.is_test = true;
        let (counter, mark, ..) = skip_of(&reschedule.decide(plan)).unwrap();
        assert_eq!(
            (counter, mark),
            (Counter::SkippedInactive, true),
            "a reschedule request is no lost patient, checked before anything else"
        );

        let mut case = sendable();
        case.booking.has_successful_booking = true;
        case.booking.recently_recovered = true;
        case.booking.other_matched_therapists = 0;
        let order = [
            Counter::SkippedHasSuccessfulBooking,
            Counter::SkippedRecentlyRecovered,
            Counter::SkippedNoOtherMatches,
        ];
        for expected in order {
            let (counter, mark, again, _) = skip_of(&case.decide(plan)).unwrap();
            assert_eq!((counter, mark, again), (expected, true, false));
            match expected {
                Counter::SkippedHasSuccessfulBooking => case.booking.has_successful_booking = false,
                Counter::SkippedRecentlyRecovered => case.booking.recently_recovered = false,
                _ => case.booking.other_matched_therapists = 1,
            }
        }
        only_email(&case.decide(plan));
    }

    #[test]
    fn the_recently_recovered_reason_names_the_recovery_period() {
        let mut case = sendable();
        case.booking.recently_recovered = true;
        let (_, _, _, reason) = skip_of(&case.decide(plan)).unwrap();
        let hours = format!("{} hours", PATIENT_EXCLUSIVE_PERIOD.num_hours());
        assert!(reason.contains(&hours), "{reason:?} vs {hours}");
    }
}
