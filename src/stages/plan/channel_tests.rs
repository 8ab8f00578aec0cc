//! Unit tests of `stages::plan`'s channel choice (email, SMS, both, neither), no PostgreSQL.

use super::*;
use crate::stages::fixtures::{
    addressed, message_skips, skip_of, Case, PATIENT_EMAIL, PATIENT_PHONE,
};

fn email_and_sms(case: &Case, kind: MessageKind) -> Plan {
    case.decide(|i| {
        let p = i.patient.or(i.attendee).unwrap();
        let ctx = base_context(i, Some(p)).unwrap();
        patient_email_and_sms(i, p, kind, ctx)
    })
}

fn with_contacts(email: Option<&str>, phone: Option<&str>, sms_enabled: bool) -> Case {
    let mut case = Case::new();
    case.sms_enabled = sms_enabled;
    let p = case.patient.as_mut().unwrap();
    p.email = email.map(str::to_string);
    p.phone_number = phone.map(str::to_string);
    case
}

#[test]
fn a_reminder_goes_by_email_and_sms_when_both_are_usable() {
    use Channel::*;
    use RecipientRole::Patient;
    let plan = email_and_sms(&Case::new(), MessageKind::Reminder24h);
    assert_eq!(
        addressed(&plan),
        [
            (Patient, Email, PATIENT_EMAIL.to_string()),
            (Patient, Sms, PATIENT_PHONE.to_string())
        ]
    );
    let out = crate::stages::fixtures::sends(&plan);
    assert!(out
        .iter()
        .all(|o| o.kind == MessageKind::Reminder24h && !o.invite));
    assert_eq!(out[0].to_name.as_deref(), Some("Jonas Weber"));
    assert_eq!(out[1].to_name, None, "an SMS has no display name");
    assert!(out.iter().all(|o| o.carries_copy_of.is_none()));
}

#[test]
fn sms_is_left_out_when_off_or_when_the_message_has_no_sms_form() {
    use Channel::Email;
    use RecipientRole::Patient;
    let off = email_and_sms(
        &with_contacts(Some(PATIENT_EMAIL), Some(PATIENT_PHONE), false),
        MessageKind::Reminder1h,
    );
    assert_eq!(
        addressed(&off),
        [(Patient, Email, PATIENT_EMAIL.to_string())]
    );
    let no_sms_form = email_and_sms(&Case::new(), MessageKind::IntroFollowup);
    assert_eq!(
        addressed(&no_sms_form),
        [(Patient, Email, PATIENT_EMAIL.to_string())]
    );
}

#[test]
fn an_invalid_phone_skips_the_sms_and_keeps_the_email() {
    use Channel::*;
    use RecipientRole::Patient;
    let plan = email_and_sms(
        &with_contacts(Some(PATIENT_EMAIL), Some("0151-not-e164"), true),
        MessageKind::Reminder24h,
    );
    assert_eq!(
        addressed(&plan),
        [(Patient, Email, PATIENT_EMAIL.to_string())]
    );
    assert_eq!(
        message_skips(&plan),
        [(Patient, Sms, Counter::SkippedInvalidPhone)]
    );
    // With SMS off the invalid number is not looked at.
    let plan = email_and_sms(
        &with_contacts(Some(PATIENT_EMAIL), Some("0151-not-e164"), false),
        MessageKind::Reminder24h,
    );
    assert!(message_skips(&plan).is_empty());
}

#[test]
fn phone_only_patients_get_the_sms_or_are_counted_by_the_reason() {
    use Channel::Sms;
    use RecipientRole::Patient;
    let plan = email_and_sms(
        &with_contacts(None, Some(PATIENT_PHONE), true),
        MessageKind::Reminder1h,
    );
    assert_eq!(
        addressed(&plan),
        [(Patient, Sms, PATIENT_PHONE.to_string())]
    );

    let cases = [
        // (email, phone, sms enabled, kind, counter)
        (
            None,
            Some(PATIENT_PHONE),
            false,
            MessageKind::Reminder1h,
            Counter::SkippedNoContact,
        ),
        (
            None,
            Some(PATIENT_PHONE),
            true,
            MessageKind::IntroFollowup,
            Counter::SkippedNoContact,
        ),
        (
            None,
            None,
            true,
            MessageKind::Reminder1h,
            Counter::SkippedNoContact,
        ),
        (
            Some("temp_1@example.de"),
            None,
            true,
            MessageKind::Reminder1h,
            Counter::SkippedNoContact,
        ),
        (
            None,
            Some("12345"),
            true,
            MessageKind::Reminder24h,
            Counter::SkippedInvalidPhone,
        ),
        (
            None,
            Some("12345"),
            false,
            MessageKind::Reminder24h,
            Counter::SkippedNoContact,
        ),
    ];
    for (email, phone, sms, kind, counter) in cases {
        let plan = email_and_sms(&with_contacts(email, phone, sms), kind);
        assert_eq!(
            skip_of(&plan).map(|(c, mark, again, _)| (c, mark, again)),
            Some((counter, false, false)),
            "{email:?} {phone:?} sms={sms} {kind:?}"
        );
    }
}

#[test]
fn email_only_messages_need_a_usable_email() {
    use Channel::Email;
    use RecipientRole::Patient;
    let case = Case::new();
    let plan = case.decide(|i| {
        let ctx = base_context(i, i.patient).unwrap();
        patient_email(i.patient.unwrap(), MessageKind::SessionFollowup, ctx)
    });
    assert_eq!(
        addressed(&plan),
        [(Patient, Email, PATIENT_EMAIL.to_string())]
    );
    let no_email = with_contacts(Some("temp_9@example.de"), Some(PATIENT_PHONE), true);
    let plan = no_email.decide(|i| {
        let ctx = base_context(i, i.patient).unwrap();
        patient_email(i.patient.unwrap(), MessageKind::SessionFollowup, ctx)
    });
    assert_eq!(
        skip_of(&plan),
        Some((Counter::SkippedNoContact, false, false, "no usable email"))
    );
}
