//! After the session: intro followup, session followup and cancellation recovery (windows and marks in `domain::Stage`).
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
    ctx.booking_link = Some(crate::links::booking_link(&crate::links::BookingLink {
        cal_origin: &input.settings.cal_origin,
        cal_username: username,
        therapist_id,
        patient_id,
        match_id: b.match_id,
        source,
        name: patient.and_then(|p| p.name.as_deref()),
        email: patient.and_then(|p| p.email.as_deref()),
    }));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel::Email;
    use crate::domain::RecipientRole::Patient;
    use crate::domain::RECOVERY_EXCLUSIVE_PERIOD;
    use crate::stages::fixtures::{addressed, sends, skip_of, skipped, Case, PATIENT_EMAIL};

    type Rule = fn(&PlanInput<'_>) -> Plan;
    const RULES: [(&str, Rule); 3] = [
        ("intro", intro),
        ("session", session),
        ("cancellation", cancellation),
    ];

    /// A case each rule would send for: an intro for `intro`, free slots for `session`,
    /// another match for `cancellation`.
    fn sendable() -> Case {
        let mut case = Case::new();
        case.booking.booking_kind = Some("intro".into());
        case.booking.full_slots_count = Some(3);
        case.booking.other_matched_therapists = 2;
        case.booking.status = Some("CANCELLED".into());
        case
    }

    fn only_email(plan: &Plan) {
        assert_eq!(
            addressed(plan),
            [(Patient, Email, PATIENT_EMAIL.to_string())],
            "followups are email only, never SMS"
        );
    }

    #[test]
    fn each_followup_is_one_email_to_the_patient_of_its_kind() {
        let case = sendable();
        for ((name, rule), kind) in RULES.into_iter().zip([
            MessageKind::IntroFollowup,
            MessageKind::SessionFollowup,
            MessageKind::CancellationRecovery,
        ]) {
            let plan = case.decide(rule);
            only_email(&plan);
            let out = sends(&plan);
            assert_eq!(out[0].kind, kind, "{name}");
            assert!(!out[0].invite, "{name}");
        }
    }

    #[test]
    fn the_intro_and_session_followups_carry_a_prefilled_booking_link() {
        let case = sendable();
        for (rule, source) in [
            (intro as Rule, "intro_followup_email"),
            (session, "session_followup_email"),
        ] {
            let plan = case.decide(rule);
            let link = sends(&plan)[0].context.booking_link.clone().unwrap();
            assert!(link.starts_with("https://cal.com/lena-brandt"), "{link}");
            assert!(link.contains(source), "{link}");
            assert!(
                link.contains("jonas.weber"),
                "the patient's email pre-fills the form"
            );
        }
        let plan = case.decide(cancellation);
        let ctx = &sends(&plan)[0].context;
        assert_eq!(
            ctx.booking_link, None,
            "recovery points to the other matches"
        );
        assert_eq!(ctx.other_therapists_count, Some(2));
    }

    #[test]
    fn no_booking_link_without_the_therapists_username_or_the_ids() {
        let unlinkable: [fn(&mut Case); 3] = [
            |c| c.booking.therapist.as_mut().unwrap().cal_username = None,
            |c| c.booking.therapist_id = None,
            |c| c.booking.patient_id = None,
        ];
        for change in unlinkable {
            let mut case = sendable();
            change(&mut case);
            for rule in [intro as Rule, session] {
                let plan = case.decide(rule);
                only_email(&plan);
                assert_eq!(sends(&plan)[0].context.booking_link, None);
            }
        }
    }

    #[test]
    fn followups_never_reach_test_data_missing_patients_or_walk_ins() {
        for (name, rule) in RULES {
            let mut test_booking = sendable();
            test_booking.booking.is_test = true;
            assert_eq!(
                skipped(&test_booking.decide(rule)),
                Counter::SkippedTest,
                "{name}"
            );
            let mut test_patient = sendable();
            test_patient.patient.as_mut().unwrap().is_test = true;
            assert_eq!(
                skipped(&test_patient.decide(rule)),
                Counter::SkippedTest,
                "{name}"
            );
            let mut walk_in = Case::walk_in();
            walk_in.booking.full_slots_count = Some(3);
            walk_in.booking.other_matched_therapists = 2;
            assert_eq!(
                skipped(&walk_in.decide(rule)),
                Counter::SkippedNoPatient,
                "{name}: advertising needs a patient row"
            );
            let mut no_email = sendable();
            no_email.patient.as_mut().unwrap().email = None;
            assert_eq!(
                skip_of(&no_email.decide(rule)),
                Some((Counter::SkippedNoContact, false, false, "no usable email")),
                "{name}: a phone does not help"
            );
            let mut no_start = sendable();
            no_start.booking.start_time = None;
            assert_eq!(
                skipped(&no_start.decide(rule)),
                Counter::SkippedInactive,
                "{name}"
            );
        }
    }

    #[test]
    fn an_intro_whose_patient_booked_a_full_session_is_done() {
        let mut case = sendable();
        case.booking.future_full_with_therapist = true;
        let (counter, mark, again, _) = skip_of(&case.decide(intro)).unwrap();
        assert_eq!(
            (counter, mark, again),
            (Counter::SkippedAlreadyBooked, true, false)
        );
        // Another kind of future booking does not stop the intro followup.
        let mut case = sendable();
        case.booking.future_any_with_therapist = true;
        only_email(&case.decide(intro));
        // The test rule comes first.
        let mut case = sendable();
        case.booking.future_full_with_therapist = true;
        case.booking.is_test = true;
        assert_eq!(skipped(&case.decide(intro)), Counter::SkippedTest);
    }

    #[test]
    fn a_session_followup_waits_for_free_slots_and_ends_when_the_patient_rebooked() {
        let mut case = sendable();
        case.booking.future_any_with_therapist = true;
        let (counter, mark, again, _) = skip_of(&case.decide(session)).unwrap();
        assert_eq!(
            (counter, mark, again),
            (Counter::SkippedAlreadyBooked, true, false)
        );
        for slots in [None, Some(0), Some(-1)] {
            let mut case = sendable();
            case.booking.full_slots_count = slots;
            let (counter, mark, again, _) = skip_of(&case.decide(session)).unwrap();
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
        assert_eq!(
            skipped(&case.decide(session)),
            Counter::SkippedAlreadyBooked
        );
    }

    #[test]
    fn cancellation_recovery_skips_reschedules_recovered_and_matchless_patients_in_order() {
        let mut reschedule = sendable();
        reschedule.booking.request_reschedule = true;
        reschedule.booking.is_test = true;
        let (counter, mark, ..) = skip_of(&reschedule.decide(cancellation)).unwrap();
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
            let (counter, mark, again, _) = skip_of(&case.decide(cancellation)).unwrap();
            assert_eq!((counter, mark, again), (expected, true, false));
            match expected {
                Counter::SkippedHasSuccessfulBooking => case.booking.has_successful_booking = false,
                Counter::SkippedRecentlyRecovered => case.booking.recently_recovered = false,
                _ => case.booking.other_matched_therapists = 1,
            }
        }
        only_email(&case.decide(cancellation));
    }

    #[test]
    fn the_recently_recovered_reason_names_the_recovery_period() {
        let mut case = sendable();
        case.booking.recently_recovered = true;
        let (_, _, _, reason) = skip_of(&case.decide(cancellation)).unwrap();
        let hours = format!("{} hours", RECOVERY_EXCLUSIVE_PERIOD.num_hours());
        assert!(reason.contains(&hours), "{reason:?} vs {hours}");
    }
}
