//! The cancellation notice: a patient who got a calendar invite for a session that is then
//! cancelled gets a short email carrying the invite's `METHOD:CANCEL` (same UID, higher
//! SEQUENCE), so the entry leaves their calendar (RFC 5546).
//!
//! Not a timed stage: the webhook's path calls `driver::notify_cancellation` right after a
//! BOOKING_CANCELLED is committed. It goes through the delivery ledger under its own ledger
//! stage, [`LEDGER_STAGE`], keyed by booking, stage, channel and role, so it goes out once
//! however often the cancellation arrives. This file holds the rule alone (pure); the
//! driver claims, renders, sends and records.

use super::plan::{base_context, Message, MessagePlan, Plan, PlanInput, Recipient};
use crate::domain::{
    BookingStatus, Counter, EmailAddress, LedgerStage, MessageKind, RecipientRole,
};

/// `journey_deliveries.stage` of the cancellation notice.
pub(crate) const LEDGER_STAGE: LedgerStage = LedgerStage::CancellationNotice;

/// Who gets the notice: the patient of a cancelled, non-test booking whose confirmation (with
/// its invite) went out, at their usable email (the people row's, else, for a walk-in
/// attendee without one, the payload's).
pub(crate) fn plan(input: &PlanInput<'_>) -> Plan {
    let b = input.booking;
    let cancelled = b
        .status
        .as_deref()
        .is_some_and(|s| BookingStatus::parse(s) == Ok(BookingStatus::Cancelled));
    if !cancelled {
        return Plan::skip(Counter::SkippedInactive, "booking is not cancelled");
    }
    if b.is_test || input.patient.is_some_and(|p| p.is_test) {
        return Plan::skip(Counter::SkippedTest, "test booking");
    }
    if b.client_confirmation_sent_at.is_none() {
        return Plan::skip(
            Counter::SkippedInactive,
            "the patient never got an invite to take back",
        );
    }
    let Some(mut context) = base_context(input, input.patient) else {
        return Plan::skip(Counter::SkippedInactive, "booking has no start time");
    };
    // The people row, else (a walk-in who booked on Cal.com directly) the payload's attendee.
    let Some(who) = input.patient.or(input.attendee) else {
        return Plan::skip(
            Counter::SkippedNoPatient,
            "booking has no patient or attendee",
        );
    };
    let (email, name) = (who.email.as_deref(), who.name.clone());
    let Some(email) = email.and_then(|e| EmailAddress::parse(e).ok()) else {
        return Plan::skip(Counter::SkippedNoContact, "patient has no usable email");
    };
    if context.patient_name.is_none() {
        context.patient_name = name.clone().filter(|n| !n.trim().is_empty());
    }
    Plan::Messages(vec![MessagePlan::Send(Box::new(Message {
        role: RecipientRole::Patient,
        kind: MessageKind::CancellationNotice,
        to: Recipient::Email(email),
        to_name: name,
        context,
        invite: true,
        carries_copy_of: None,
    }))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel::Email;
    use crate::domain::RecipientRole::Patient;
    use crate::stages::fixtures::{addressed, at, sends, skip_of, skipped, Case, PATIENT_EMAIL};

    /// A cancelled booking whose patient got the confirmation with its invite.
    fn invited(mut case: Case) -> Case {
        case.booking.status = Some("cancelled".into());
        case.booking.client_confirmation_sent_at = Some(at("2026-03-09T15:00:00Z"));
        case
    }

    #[test]
    fn only_a_cancelled_invited_real_patient_with_an_email_gets_the_notice() {
        let decided = invited(Case::new()).decide(plan);
        assert_eq!(
            addressed(&decided),
            [(Patient, Email, PATIENT_EMAIL.to_string())]
        );
        let out = sends(&decided);
        assert_eq!(out[0].kind, MessageKind::CancellationNotice);
        assert!(out[0].invite, "it carries the invite's METHOD:CANCEL");
        assert_eq!(out[0].to_name.as_deref(), Some("Jonas Weber"));

        let changes: [fn(&mut Case); 4] = [
            |c| c.booking.client_confirmation_sent_at = None,
            |c| c.booking.is_test = true,
            |c| c.patient.as_mut().unwrap().is_test = true,
            |c| c.booking.status = Some("ACCEPTED".into()),
        ];
        for change in changes {
            let mut case = invited(Case::new());
            change(&mut case);
            assert!(
                addressed(&case.decide(plan)).is_empty(),
                "{:?}",
                case.booking
            );
        }
        let mut no_email = invited(Case::new());
        no_email.patient.as_mut().unwrap().email = Some("temp_123@example.de".into());
        assert_eq!(skipped(&no_email.decide(plan)), Counter::SkippedNoContact);
    }

    #[test]
    fn each_reason_not_to_send_is_recorded_with_its_counter() {
        let mut active = invited(Case::new());
        active.booking.status = Some("ACCEPTED".into());
        let mut never_invited = invited(Case::new());
        never_invited.booking.client_confirmation_sent_at = None;
        let mut test = invited(Case::new());
        test.booking.is_test = true;
        let mut no_start = invited(Case::new());
        no_start.booking.start_time = None;
        let mut nobody = invited(Case::walk_in());
        nobody.booking.attendee_email = None;
        nobody.booking.attendee_phone = None;
        for (case, counter, reason) in [
            (active, Counter::SkippedInactive, "booking is not cancelled"),
            (
                never_invited,
                Counter::SkippedInactive,
                "the patient never got an invite to take back",
            ),
            (test, Counter::SkippedTest, "test booking"),
            (
                no_start,
                Counter::SkippedInactive,
                "booking has no start time",
            ),
            (
                nobody,
                Counter::SkippedNoPatient,
                "booking has no patient or attendee",
            ),
        ] {
            assert_eq!(
                skip_of(&case.decide(plan)),
                Some((counter, false, false, reason))
            );
        }
    }

    #[test]
    fn a_walk_in_gets_the_notice_at_the_payloads_address_with_its_name() {
        let decided = invited(Case::walk_in()).decide(plan);
        assert_eq!(
            addressed(&decided),
            [(Patient, Email, "walk.in@example.de".to_string())]
        );
        let out = sends(&decided);
        assert_eq!(out[0].to_name.as_deref(), Some("Mia Walk"));
        assert_eq!(out[0].context.patient_name.as_deref(), Some("Mia Walk"));
        // A phone-only walk-in cannot get an email notice.
        let mut phone_only = invited(Case::walk_in());
        phone_only.booking.attendee_email = None;
        assert_eq!(skipped(&phone_only.decide(plan)), Counter::SkippedNoContact);
    }
}
