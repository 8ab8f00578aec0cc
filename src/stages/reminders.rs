//! The rule and selection the two reminder stages share (`reminder_24h.rs`, `reminder_1h.rs`
//! hold their facts): who is reminded, by which channels, among the active bookings starting
//! inside the window.

use super::plan::{base_context, check_recipient, patient_email_and_sms, Plan, PlanInput};
use crate::domain::{Anchor, Counter, MessageKind, RowFacts, Selection, StatusRule};

/// Active bookings whose session starts inside the window (looking ahead).
pub(crate) const SELECTION: Selection = Selection {
    anchor: Anchor::StartTime,
    statuses: StatusRule::Active,
    booking_kind: None,
    needs_therapist: false,
    row_facts: RowFacts::None,
};

/// The patient is reminded of `kind` by email and, where SMS is on and the number valid, SMS.
pub(crate) fn plan(input: &PlanInput<'_>, kind: MessageKind) -> Plan {
    let patient = match check_recipient(input) {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let Some(context) = base_context(input, Some(patient)) else {
        return Plan::skip(Counter::SkippedInactive, "booking has no start time");
    };
    patient_email_and_sms(input, patient, kind, context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel::{Email, Sms};
    use crate::domain::RecipientRole::Patient;
    use crate::stages::fixtures::{
        addressed, message_skips, sends, skip_of, skipped, Case, PATIENT_EMAIL, PATIENT_PHONE,
    };

    const KINDS: [MessageKind; 2] = [MessageKind::Reminder24h, MessageKind::Reminder1h];

    #[test]
    fn each_reminder_stage_sends_its_own_kind_by_email_and_sms() {
        type Rule = fn(&PlanInput<'_>) -> Plan;
        let stages: [(Rule, MessageKind); 2] = [
            (crate::stages::reminder_24h::plan, MessageKind::Reminder24h),
            (crate::stages::reminder_1h::plan, MessageKind::Reminder1h),
        ];
        for (rule, kind) in stages {
            let decided = Case::new().decide(rule);
            assert_eq!(sends(&decided).len(), 2, "{kind:?}: email and SMS");
            assert!(sends(&decided).iter().all(|o| o.kind == kind));
        }
    }

    #[test]
    fn the_patient_is_reminded_by_email_and_sms_of_the_stages_kind() {
        for kind in KINDS {
            let decided = Case::new().decide(|i| plan(i, kind));
            assert_eq!(
                addressed(&decided),
                [
                    (Patient, Email, PATIENT_EMAIL.to_string()),
                    (Patient, Sms, PATIENT_PHONE.to_string())
                ]
            );
            assert!(sends(&decided).iter().all(|o| o.kind == kind && !o.invite));
        }
    }

    #[test]
    fn a_walk_in_is_reminded_at_the_payloads_contact() {
        let decided = Case::walk_in().decide(|i| plan(i, MessageKind::Reminder1h));
        assert_eq!(
            addressed(&decided),
            [
                (Patient, Email, "walk.in@example.de".to_string()),
                (Patient, Sms, "+4915199999999".to_string())
            ]
        );
        assert_eq!(
            sends(&decided)[0].context.patient_name.as_deref(),
            Some("Mia Walk")
        );
    }

    #[test]
    fn test_bookings_test_patients_and_missing_patients_are_skipped_and_recorded() {
        let mut test_booking = Case::new();
        test_booking.booking.is_test = true;
        let mut test_patient = Case::new();
        test_patient.patient.as_mut().unwrap().is_test = true;
        let mut test_walk_in = Case::walk_in();
        test_walk_in.booking.is_test = true;
        let mut nobody = Case::walk_in();
        nobody.booking.attendee_email = None;
        nobody.booking.attendee_phone = None;
        for (case, counter) in [
            (test_booking, Counter::SkippedTest),
            (test_patient, Counter::SkippedTest),
            (test_walk_in, Counter::SkippedTest),
            (nobody, Counter::SkippedNoPatient),
        ] {
            for kind in KINDS {
                let (c, mark, again, _) = skip_of(&case.decide(|i| plan(i, kind))).unwrap();
                assert_eq!((c, mark, again), (counter, false, false));
            }
        }
    }

    #[test]
    fn a_booking_without_a_start_time_is_skipped() {
        let mut case = Case::new();
        case.booking.start_time = None;
        assert_eq!(
            skipped(&case.decide(|i| plan(i, MessageKind::Reminder24h))),
            Counter::SkippedInactive
        );
    }

    #[test]
    fn contact_rules_decide_the_channels() {
        // SMS off (no Twilio, no outbox): email only, the phone is not looked at.
        let mut case = Case::new();
        case.sms_enabled = false;
        case.patient.as_mut().unwrap().phone_number = Some("garbage".into());
        let decided = case.decide(|i| plan(i, MessageKind::Reminder24h));
        assert_eq!(
            addressed(&decided),
            [(Patient, Email, PATIENT_EMAIL.to_string())]
        );
        assert!(message_skips(&decided).is_empty());
        // SMS on, the number invalid: the email goes, the SMS is a counted skip.
        case.sms_enabled = true;
        let decided = case.decide(|i| plan(i, MessageKind::Reminder24h));
        assert_eq!(
            addressed(&decided),
            [(Patient, Email, PATIENT_EMAIL.to_string())]
        );
        assert_eq!(
            message_skips(&decided),
            [(Patient, Sms, Counter::SkippedInvalidPhone)]
        );
        // Phone-only patient with SMS off: no contact.
        case.sms_enabled = false;
        let p = case.patient.as_mut().unwrap();
        p.email = None;
        p.phone_number = Some(PATIENT_PHONE.into());
        assert_eq!(
            skipped(&case.decide(|i| plan(i, MessageKind::Reminder1h))),
            Counter::SkippedNoContact
        );
    }
}
