//! Booking confirmation to the patient and new-booking notice to the therapist: sent right
//! after the webhook, and by `confirmation-recovery` for whichever of the two did not go out.
//! Both paths share the ledger stage `confirmation`, so neither can duplicate the other.
//! Test bookings get their confirmations redirected to `QA_NOTIFY_EMAIL` from the webhook
//! only; recovery never sends for them.

use super::plan::{base_context, contacts, MessagePlan, Outgoing, Plan, PlanInput, Recipient};
use crate::domain::{Counter, EmailAddress, MessageKind, RecipientRole};

/// Who asked for the confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Webhook,
    Recovery,
}

pub fn plan(input: &PlanInput<'_>, trigger: Trigger) -> Plan {
    let b = input.booking;
    let test = b.is_test || input.patient.is_some_and(|p| p.is_test);
    if test {
        return match (trigger, &input.settings.qa_notify_email) {
            (Trigger::Webhook, Some(qa)) => qa_plan(input, qa.clone()),
            _ => Plan::skip(Counter::SkippedTest, "test booking"),
        };
    }
    let Some(context) = base_context(input, input.patient) else {
        return Plan::skip(Counter::SkippedInactive, "booking has no start time");
    };
    let mut out = Vec::new();
    let mut patient_missing = false;
    if b.client_confirmation_sent_at.is_none() {
        match input.patient {
            None => patient_missing = true,
            Some(p) => {
                if let Some(email) = contacts(p).email {
                    out.push(MessagePlan::Send(Box::new(Outgoing {
                        role: RecipientRole::Patient,
                        kind: MessageKind::ClientConfirmation,
                        to: Recipient::Email(email),
                        to_name: p.name.clone(),
                        context: context.clone(),
                        invite: true,
                    })));
                } else {
                    out.push(MessagePlan::Skip {
                        channel: crate::domain::Channel::Email,
                        role: RecipientRole::Patient,
                        counter: Counter::SkippedNoContact,
                        reason: "patient has no usable email",
                    });
                }
            }
        }
    }
    if b.therapist_notification_sent_at.is_none() {
        let therapist_email = b
            .therapist
            .as_ref()
            .and_then(|t| t.email.as_deref())
            .and_then(|e| EmailAddress::parse(e).ok());
        match therapist_email {
            Some(email) => out.push(MessagePlan::Send(Box::new(Outgoing {
                role: RecipientRole::Therapist,
                kind: MessageKind::TherapistNotification,
                to: Recipient::Email(email),
                to_name: b.therapist.as_ref().and_then(|t| t.display_name()),
                context,
                invite: true,
            }))),
            None => out.push(MessagePlan::Skip {
                channel: crate::domain::Channel::Email,
                role: RecipientRole::Therapist,
                counter: Counter::SkippedNoContact,
                reason: "therapist has no usable email",
            }),
        }
    }
    if patient_missing && out.iter().all(|m| !matches!(m, MessagePlan::Send(_))) {
        return Plan::skip(Counter::SkippedNoPatient, "booking has no patient row");
    }
    if patient_missing {
        out.push(MessagePlan::Skip {
            channel: crate::domain::Channel::Email,
            role: RecipientRole::Patient,
            counter: Counter::SkippedNoPatient,
            reason: "booking has no patient row",
        });
    }
    Plan::Messages(out)
}

fn qa_plan(input: &PlanInput<'_>, qa: EmailAddress) -> Plan {
    let Some(context) = base_context(input, input.patient) else {
        return Plan::skip(Counter::SkippedInactive, "booking has no start time");
    };
    Plan::Messages(vec![MessagePlan::Send(Box::new(Outgoing {
        role: RecipientRole::Qa,
        kind: MessageKind::ClientConfirmation,
        to: Recipient::Email(qa),
        to_name: None,
        context,
        invite: true,
    }))])
}
