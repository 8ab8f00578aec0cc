//! `confirmation-recovery`: its facts ([`FACTS`]) and its rule. Booking confirmation to the
//! patient and new-booking notice to the therapist: sent right after the webhook (the same rule,
//! [`Trigger::Webhook`]), and by this stage for whichever of the two did not go out. Both paths
//! share the ledger stage `confirmation`, so neither can duplicate the other.
//! Test bookings get their confirmations redirected to `QA_NOTIFY_EMAIL` from the webhook
//! only; recovery never sends for them. A booking that is not active (PENDING: the host has
//! not accepted yet) is confirmed to nobody until it is.
//!
//! QA gets one email per test booking, under the ledger key of role `qa`: the patient
//! confirmation with the therapist notice carried in it (as text after it, and as an HTML
//! attachment). One message per key keeps exactly-once on the existing unique key
//! (booking, stage, channel, role) and the fixed role values; two QA emails would need a
//! second role value that means nothing to anyone but the ledger.

use chrono::Duration;

use super::plan::{base_context, contacts, MessagePlan, Outgoing, Plan, PlanInput, Recipient};
use crate::db::bookings::is_active_status;
use crate::domain::{
    Anchor, Channel, Counter, EmailAddress, MessageKind, RecipientRole, RowFacts, Selection,
    StageFacts, StatusRule, CONFIRMATION_LEDGER_STAGE,
};
use crate::templates::MessageContext;

/// Confirmation recovery has no look-back: it takes every unconfirmed active booking whose
/// session is still ahead and that was created before the window's end (10 minutes ago: the
/// webhook may still be sending); the window's start only states the width the schedule
/// proof checks the cadence against.
pub(crate) const FACTS: StageFacts = StageFacts {
    name: "confirmation_recovery",
    command: "confirmation-recovery",
    ledger_stage: CONFIRMATION_LEDGER_STAGE,
    window: (Duration::days(-7), Duration::minutes(-10)),
    cadence: Duration::minutes(5),
    mark_column: "client_confirmation_sent_at",
    therapist_mark_column: Some("therapist_notification_sent_at"),
    patient_exclusive_period: None,
    selection: Selection {
        anchor: Anchor::CreatedWhileSessionAhead,
        statuses: StatusRule::Active,
        booking_kind: None,
        needs_therapist: true,
        row_facts: RowFacts::None,
    },
    kinds: &[
        MessageKind::ClientConfirmation,
        MessageKind::TherapistNotification,
    ],
    miss_detail: "never selected or sent",
};

/// Who asked for the confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Webhook,
    Recovery,
}

pub fn plan(input: &PlanInput<'_>, trigger: Trigger) -> Plan {
    let b = input.booking;
    if !is_active_status(b.status.as_deref()) {
        // Not decided: the host's acceptance makes it active, and then both go out.
        return Plan::skip_for_now(Counter::SkippedInactive, "booking is not active");
    }
    // A walk-in attendee (no patient row) is confirmed at the payload's contact.
    let patient = input.patient.or(input.attendee);
    let test = b.is_test || patient.is_some_and(|p| p.is_test);
    if test {
        return match (trigger, &input.settings.qa_notify_email) {
            (Trigger::Webhook, Some(qa)) => qa_plan(input, qa.clone()),
            _ => Plan::skip(Counter::SkippedTest, "test booking"),
        };
    }
    let Some(context) = base_context(input, patient) else {
        return Plan::skip(Counter::SkippedInactive, "booking has no start time");
    };
    let mut out = Vec::new();
    let mut patient_missing = false;
    if b.client_confirmation_sent_at.is_none() {
        match patient {
            None => patient_missing = true,
            Some(p) => out.push(invite_email(
                (RecipientRole::Patient, MessageKind::ClientConfirmation),
                contacts(p).email,
                p.name.clone(),
                context.clone(),
                "patient has no usable email",
            )),
        }
    }
    if b.therapist_notification_sent_at.is_none() {
        let therapist = b.therapist.as_ref();
        out.push(invite_email(
            (RecipientRole::Therapist, MessageKind::TherapistNotification),
            therapist
                .and_then(|t| t.email.as_deref())
                .and_then(|e| EmailAddress::parse(e).ok()),
            therapist.and_then(|t| t.display_name()),
            context,
            "therapist has no usable email",
        ));
    }
    if patient_missing && out.iter().all(|m| !matches!(m, MessagePlan::Send(_))) {
        return Plan::skip(Counter::SkippedNoPatient, "booking has no patient row");
    }
    if patient_missing {
        out.push(MessagePlan::Skip {
            channel: Channel::Email,
            role: RecipientRole::Patient,
            counter: Counter::SkippedNoPatient,
            reason: "booking has no patient row",
        });
    }
    Plan::Messages(out)
}

/// The message `kind` to `role` by email with the calendar invite, or a counted skip (saying
/// `no_email`) when there is no usable address: confirmations are email only.
fn invite_email(
    (role, kind): (RecipientRole, MessageKind),
    email: Option<EmailAddress>,
    to_name: Option<String>,
    context: MessageContext,
    no_email: &'static str,
) -> MessagePlan {
    match email {
        Some(email) => MessagePlan::Send(Box::new(Outgoing {
            role,
            kind,
            to: Recipient::Email(email),
            to_name,
            context,
            invite: true,
            carries_copy_of: None,
        })),
        None => MessagePlan::Skip {
            channel: Channel::Email,
            role,
            counter: Counter::SkippedNoContact,
            reason: no_email,
        },
    }
}

fn qa_plan(input: &PlanInput<'_>, qa: EmailAddress) -> Plan {
    let Some(context) = base_context(input, input.patient.or(input.attendee)) else {
        return Plan::skip(Counter::SkippedInactive, "booking has no start time");
    };
    Plan::Messages(vec![MessagePlan::Send(Box::new(Outgoing {
        role: RecipientRole::Qa,
        kind: MessageKind::ClientConfirmation,
        to: Recipient::Email(qa),
        to_name: None,
        context,
        invite: true,
        carries_copy_of: Some(MessageKind::TherapistNotification),
    }))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel::Email;
    use crate::domain::RecipientRole::{Patient, Qa, Therapist};
    use crate::stages::fixtures::{
        addressed, at, message_skips, sends, skip_of, skipped, Case, PATIENT_EMAIL, THERAPIST_EMAIL,
    };

    fn webhook(case: &Case) -> Plan {
        case.decide(|i| plan(i, Trigger::Webhook))
    }

    fn recovery(case: &Case) -> Plan {
        case.decide(|i| plan(i, Trigger::Recovery))
    }

    fn both() -> Vec<(RecipientRole, crate::domain::Channel, String)> {
        vec![
            (Patient, Email, PATIENT_EMAIL.to_string()),
            (Therapist, Email, THERAPIST_EMAIL.to_string()),
        ]
    }

    #[test]
    fn an_active_booking_confirms_the_patient_and_notifies_the_therapist_with_invites() {
        for trigger in [Trigger::Webhook, Trigger::Recovery] {
            let decided = Case::new().decide(|i| plan(i, trigger));
            assert_eq!(addressed(&decided), both(), "{trigger:?}");
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
}
