//! Unit tests of confirmation recovery's rule (and of the webhook's path through it), on
//! the fixtures of `stages::fixtures`: no PostgreSQL.

use super::*;
use crate::domain::Channel::Email;
use crate::domain::RecipientRole::{Patient, Qa, Therapist};
use crate::stages::fixtures::{
    addressed, at, message_skips, sends, skip_of, skipped, Case, PATIENT_EMAIL, THERAPIST_EMAIL,
};

fn webhook(case: &Case) -> Plan {
    case.decide(|i| plan(i, Origin::Webhook))
}

fn recovery(case: &Case) -> Plan {
    case.decide(|i| plan(i, Origin::Recovery))
}

fn both() -> Vec<(RecipientRole, crate::domain::Channel, String)> {
    vec![
        (Patient, Email, PATIENT_EMAIL.to_string()),
        (Therapist, Email, THERAPIST_EMAIL.to_string()),
    ]
}

#[test]
fn an_active_booking_confirms_the_patient_and_notifies_the_therapist_with_invites() {
    for origin in [Origin::Webhook, Origin::Recovery] {
        let decided = Case::new().decide(|i| plan(i, origin));
        assert_eq!(addressed(&decided), both(), "{origin:?}");
        let out = sends(&decided);
        assert_eq!(out[0].kind, MessageKind::ClientConfirmation);
        assert_eq!(out[1].kind, MessageKind::TherapistNotification);
        assert!(
            out.iter().all(|o| o.invite),
            "both carry the calendar invite"
        );
        assert_eq!(out[0].to_name.as_deref(), Some("Jonas Weber"));
        assert_eq!(out[1].to_name.as_deref(), Some("Lena Brandt"));
        assert!(message_skips(&decided).is_empty());
    }
}

#[test]
fn a_status_that_is_not_active_is_decided_later_not_recorded() {
    for status in ["PENDING", "CANCELLED", "REJECTED", "no-such-status"] {
        let mut case = Case::new();
        case.booking.status = Some(status.into());
        assert_eq!(
            skip_of(&recovery(&case)),
            Some((
                Counter::SkippedInactive,
                false,
                true,
                "booking is not active"
            )),
            "{status}"
        );
    }
    // No status recorded at all counts as active.
    let mut case = Case::new();
    case.booking.status = None;
    assert_eq!(addressed(&recovery(&case)), both());
}

#[test]
fn only_what_is_not_marked_yet_is_sent() {
    let mut case = Case::new();
    case.booking.client_confirmation_sent_at = Some(at("2026-03-09T10:00:00Z"));
    assert_eq!(
        addressed(&recovery(&case)),
        [(Therapist, Email, THERAPIST_EMAIL.to_string())]
    );
    let mut case = Case::new();
    case.booking.therapist_notification_sent_at = Some(at("2026-03-09T10:00:00Z"));
    assert_eq!(
        addressed(&recovery(&case)),
        [(Patient, Email, PATIENT_EMAIL.to_string())]
    );
    case.booking.client_confirmation_sent_at = Some(at("2026-03-09T10:00:00Z"));
    let decided = recovery(&case);
    assert!(
        matches!(&decided, Plan::Messages(m) if m.is_empty()),
        "{decided:?}"
    );
}

#[test]
fn test_bookings_go_to_qa_from_the_webhook_only() {
    let qa = "qa@example.de";
    for mark_test in [
        |c: &mut Case| c.booking.is_test = true,
        |c: &mut Case| c.patient.as_mut().unwrap().is_test = true,
    ] {
        let mut case = Case::new();
        mark_test(&mut case);
        assert_eq!(
            skipped(&webhook(&case)),
            Counter::SkippedTest,
            "no QA_NOTIFY_EMAIL"
        );
        case.settings.qa_notify_email = Some(EmailAddress::parse(qa).unwrap());
        assert_eq!(
            skipped(&recovery(&case)),
            Counter::SkippedTest,
            "recovery never"
        );
        let decided = webhook(&case);
        assert_eq!(addressed(&decided), [(Qa, Email, qa.to_string())]);
        let out = sends(&decided);
        assert_eq!(out[0].kind, MessageKind::ClientConfirmation);
        assert_eq!(
            out[0].carries_copy_of,
            Some(MessageKind::TherapistNotification),
            "one QA email carries the therapist notice"
        );
        assert!(out[0].invite);
        assert_eq!(out[0].to_name, None);
    }
}

#[test]
fn a_pending_test_booking_is_not_sent_to_qa_either() {
    let mut case = Case::new();
    case.booking.is_test = true;
    case.booking.status = Some("PENDING".into());
    case.settings.qa_notify_email = Some(EmailAddress::parse("qa@example.de").unwrap());
    assert_eq!(skipped(&webhook(&case)), Counter::SkippedInactive);
}

#[test]
fn a_booking_without_a_start_time_is_skipped() {
    let mut case = Case::new();
    case.booking.start_time = None;
    assert_eq!(
        skip_of(&recovery(&case)),
        Some((
            Counter::SkippedInactive,
            false,
            false,
            "booking has no start time"
        ))
    );
    case.booking.is_test = true;
    case.settings.qa_notify_email = Some(EmailAddress::parse("qa@example.de").unwrap());
    assert_eq!(skipped(&webhook(&case)), Counter::SkippedInactive);
}

#[test]
fn a_walk_in_is_confirmed_at_the_payloads_address() {
    let decided = recovery(&Case::walk_in());
    assert_eq!(
        addressed(&decided),
        [
            (Patient, Email, "walk.in@example.de".to_string()),
            (Therapist, Email, THERAPIST_EMAIL.to_string())
        ]
    );
    assert_eq!(sends(&decided)[0].to_name.as_deref(), Some("Mia Walk"));
    assert_eq!(
        sends(&decided)[0].context.patient_name.as_deref(),
        Some("Mia Walk")
    );
}

#[test]
fn a_missing_email_is_a_per_message_skip_and_the_other_side_still_goes() {
    let mut case = Case::new();
    case.patient.as_mut().unwrap().email = Some("temp_7@example.de".into());
    let decided = recovery(&case);
    assert_eq!(
        addressed(&decided),
        [(Therapist, Email, THERAPIST_EMAIL.to_string())]
    );
    assert_eq!(
        message_skips(&decided),
        [(Patient, Email, Counter::SkippedNoContact)],
        "confirmations are email only: the phone does not help"
    );

    let mut case = Case::new();
    case.booking.therapist.as_mut().unwrap().email = Some("not an address".into());
    let decided = recovery(&case);
    assert_eq!(
        addressed(&decided),
        [(Patient, Email, PATIENT_EMAIL.to_string())]
    );
    assert_eq!(
        message_skips(&decided),
        [(Therapist, Email, Counter::SkippedNoContact)]
    );
    case.booking.therapist = None;
    assert_eq!(
        message_skips(&recovery(&case)),
        [(Therapist, Email, Counter::SkippedNoContact)]
    );
}

#[test]
fn without_a_patient_row_the_therapist_is_still_notified() {
    let mut case = Case::new();
    case.patient = None;
    let decided = recovery(&case);
    assert_eq!(
        addressed(&decided),
        [(Therapist, Email, THERAPIST_EMAIL.to_string())]
    );
    assert_eq!(
        message_skips(&decided),
        [(Patient, Email, Counter::SkippedNoPatient)]
    );
    // Nothing at all to send: the booking is counted as having no patient, once.
    case.booking.therapist_notification_sent_at = Some(at("2026-03-09T10:00:00Z"));
    assert_eq!(
        skip_of(&recovery(&case)),
        Some((
            Counter::SkippedNoPatient,
            false,
            false,
            "booking has no patient row"
        ))
    );
    let mut case = Case::new();
    case.patient = None;
    case.booking.therapist = None;
    assert_eq!(skipped(&recovery(&case)), Counter::SkippedNoPatient);
}
