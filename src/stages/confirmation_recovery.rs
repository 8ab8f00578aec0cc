//! `confirmation-recovery`: its facts ([`FACTS`]) and its rule. Booking confirmation to the
//! patient and new-booking notice to the therapist: sent right after the webhook (the same rule,
//! [`Origin::Webhook`]), and by this stage for whichever of the two did not go out. Both paths
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

use super::plan::{base_context, contacts, Message, MessagePlan, Plan, PlanInput, Recipient};
use crate::db::bookings::is_active_status;
use crate::domain::{
    Anchor, Channel, Counter, EmailAddress, LedgerStage, MessageKind, RecipientRole, RowFacts,
    Selection, StageFacts, StatusRule,
};
use crate::templates::MessageContext;

/// Confirmation recovery has no look-back: it takes every unconfirmed active booking whose
/// session is still ahead and that was created before the window's end (10 minutes ago: the
/// webhook may still be sending); the window's start only states the width the schedule
/// proof checks the cadence against.
pub(crate) const FACTS: StageFacts = StageFacts {
    name: "confirmation_recovery",
    command: "confirmation-recovery",
    help: "Send confirmations and therapist notices the webhook did not get out",
    ledger_stage: LedgerStage::Confirmation,
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

/// Who asked for the confirmation: the webhook that committed the booking, or this stage
/// catching what the webhook did not send. (Not `webhook::Trigger`, Cal.com's event name.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Webhook,
    Recovery,
}

pub(crate) fn plan(input: &PlanInput<'_>, origin: Origin) -> Plan {
    let b = input.booking;
    if !is_active_status(b.status.as_deref()) {
        // Not decided: the host's acceptance makes it active, and then both go out.
        return Plan::skip_for_now(Counter::SkippedInactive, "booking is not active");
    }
    // A walk-in attendee (no patient row) is confirmed at the payload's contact.
    let patient = input.patient.or(input.attendee);
    let test = b.is_test || patient.is_some_and(|p| p.is_test);
    if test {
        return match (origin, &input.settings.qa_notify_email) {
            (Origin::Webhook, Some(qa)) => qa_plan(input, qa.clone()),
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
        Some(email) => MessagePlan::Send(Box::new(Message {
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
    Plan::Messages(vec![MessagePlan::Send(Box::new(Message {
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
mod tests;
