//! Unit tests of `stages::decide` (no PostgreSQL).

use std::cell::RefCell;

use super::*;
use crate::domain::Channel::{Email, Sms};
use crate::domain::RecipientRole::{Patient, Therapist};
use crate::stages::fixtures::{booking, Case};

fn run(case: &Case, stage: Stage, existing: &Existing) -> Decision {
    // `Case::decide` lends the inputs to a rule; the decision is taken inside it.
    let decision = RefCell::new(None);
    case.decide(|input| {
        *decision.borrow_mut() = Some(decide(stage, Origin::Recovery, input, existing));
        Plan::Messages(Vec::new())
    });
    decision.into_inner().expect("the rule ran")
}

fn rows(rows: &[(Channel, RecipientRole, DeliveryStatus)]) -> Existing {
    let row = |status| LedgerRow {
        id: Uuid::from_u128(9),
        status,
        attempts: 1,
    };
    rows.iter()
        .map(|&(c, r, s)| ((booking().id, c, r), row(s)))
        .collect()
}

fn messages(d: Decision) -> Messages {
    match d {
        Decision::Messages(m) => m,
        Decision::SkipBooking { reason, .. } => panic!("expected messages, got {reason}"),
    }
}

fn to_send(m: &Messages) -> Vec<(RecipientRole, Channel)> {
    m.to_send.iter().map(|s| (s.role, s.to.channel())).collect()
}

#[test]
fn a_fresh_reminder_sends_every_planned_message() {
    let m = messages(run(&Case::new(), Stage::Reminder24h, &Existing::new()));
    assert_eq!(to_send(&m), [(Patient, Email), (Patient, Sms)]);
    assert!(m.skipped.is_empty() && m.in_doubt == 0 && !m.all_done_before());
}

#[test]
fn earlier_rows_decide_what_is_sent_again() {
    let sent_email = rows(&[(Email, Patient, DeliveryStatus::Sent)]);
    let m = messages(run(&Case::new(), Stage::Reminder24h, &sent_email));
    assert_eq!(to_send(&m), [(Patient, Sms)]);

    let retry_sms_doubt_email = rows(&[
        (Sms, Patient, DeliveryStatus::Retry),
        (Email, Patient, DeliveryStatus::InDoubt),
    ]);
    let m = messages(run(
        &Case::new(),
        Stage::Reminder24h,
        &retry_sms_doubt_email,
    ));
    assert_eq!(to_send(&m), [(Patient, Sms)]);
    assert_eq!(m.in_doubt, 1);

    let both_done = rows(&[
        (Sms, Patient, DeliveryStatus::Skipped),
        (Email, Patient, DeliveryStatus::Failed),
    ]);
    let m = messages(run(&Case::new(), Stage::Reminder24h, &both_done));
    assert!(m.all_done_before());
}

#[test]
fn a_booking_marked_sent_sends_nothing_without_a_retry_row() {
    let mut case = Case::new();
    case.booking.stage_mark = Some(case.now);
    let m = messages(run(&case, Stage::Reminder1h, &Existing::new()));
    assert!(m.all_done_before());
    let retry = rows(&[(Email, Patient, DeliveryStatus::Retry)]);
    let m = messages(run(&case, Stage::Reminder1h, &retry));
    assert_eq!(to_send(&m), [(Patient, Email)]);
}

#[test]
fn a_confirmation_is_marked_per_recipient() {
    let mut case = Case::new();
    case.booking.client_confirmation_sent_at = Some(case.now);
    let m = messages(run(&case, Stage::ConfirmationRecovery, &Existing::new()));
    assert_eq!(to_send(&m), [(Therapist, Email)]);
}

#[test]
fn a_rule_skip_is_recorded_once_under_its_key() {
    let mut case = Case::new();
    case.patient.as_mut().unwrap().phone_number = Some("12".into());
    let m = messages(run(&case, Stage::Reminder24h, &Existing::new()));
    assert_eq!(to_send(&m), [(Patient, Email)]);
    assert_eq!(m.skipped.len(), 1);
    let s = &m.skipped[0];
    assert_eq!(
        (s.key.channel, s.key.role, s.key.stage),
        (Sms, Patient, crate::domain::LedgerStage::Reminder24h)
    );
    assert_eq!(s.counter, Counter::SkippedInvalidPhone);

    let decided_before = rows(&[(Sms, Patient, DeliveryStatus::Skipped)]);
    let m = messages(run(&case, Stage::Reminder24h, &decided_before));
    assert!(m.skipped.is_empty());
}

#[test]
fn booking_skips_say_whether_they_are_recorded_and_which_column_they_close() {
    let mut case = Case::new();
    case.booking.is_test = true;
    let Decision::SkipBooking {
        counter,
        record,
        mark_column,
        ..
    } = run(&case, Stage::Reminder24h, &Existing::new())
    else {
        panic!("a test booking is skipped");
    };
    assert_eq!(
        (counter, record, mark_column),
        (Counter::SkippedTest, true, None)
    );

    let mut case = Case::new();
    case.booking.future_full_with_therapist = true;
    let Decision::SkipBooking {
        record,
        mark_column,
        ..
    } = run(&case, Stage::IntroFollowup, &Existing::new())
    else {
        panic!("an intro followup to a patient who booked is skipped");
    };
    assert_eq!((record, mark_column), (true, Some("followup_sent_at")));

    let case = Case::new();
    let Decision::SkipBooking { record, .. } = run(&case, Stage::SessionFollowup, &Existing::new())
    else {
        panic!("a session followup without free slots waits");
    };
    assert!(!record, "no free slots yet: decided again later");
}
