//! What the three stages after a session share (`intro_followup.rs`, `session_followup.rs`,
//! `cancellation_recovery.rs` hold their facts and rules): the pre-filled booking link, and
//! the tests of the rules they have in common (email only, never test data or walk-ins).

use super::plan::PlanInput;

/// Sets the context's link to book the same therapist again, pre-filled with the patient's
/// name and email, tagged with `source`; no link without the therapist's Cal.com username or
/// the ids.
pub(crate) fn with_booking_link(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Counter, MessageKind};
    use crate::stages::cancellation_recovery::plan as cancellation;
    use crate::stages::fixtures::{only_email, sendable, sends, skip_of, skipped, Case};
    use crate::stages::intro_followup::plan as intro;
    use crate::stages::plan::Plan;
    use crate::stages::session_followup::plan as session;

    type Rule = fn(&PlanInput<'_>) -> Plan;
    const RULES: [(&str, Rule); 3] = [
        ("intro", intro),
        ("session", session),
        ("cancellation", cancellation),
    ];

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
}
