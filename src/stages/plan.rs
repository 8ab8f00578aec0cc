//! What a stage decides for one booking, before anything is claimed or sent. Stage rule files
//! produce these values from rows alone (pure functions); the driver acts on them.
//!
//! The words for "a message", from decision to ledger, used across `src/stages/`:
//! - a [`Plan`] is a stage's decision for one booking: skip it, or these message plans;
//! - a [`MessagePlan`] is the decision for one message of it: send, or skip with a reason;
//! - a [`Message`] is what is sent: kind, recipient, template context;
//! - a `Delivery` (`stages::deliver`) is a message bound to its ledger key, claimed, sent
//!   and recorded; what one delivery did to the run's counters is its `Tally`;
//! - a `PlannedMessage` (`stages::report`) is a message a dry run lists instead of sending.

use chrono::{DateTime, Duration, Utc};

use crate::config::Settings;
use crate::db::bookings::{DueBooking, PatientRow};
use crate::domain::{
    BookingKind, Channel, Counter, EmailAddress, MessageKind, PhoneNumber, RecipientRole,
};
pub use crate::notify::Recipient;
use crate::templates::MessageContext;

/// Everything a rule may look at.
pub struct PlanInput<'a> {
    pub booking: &'a DueBooking,
    pub patient: Option<&'a PatientRow>,
    /// A booking without a patient row: its attendee as the payload named them (walk-in).
    pub attendee: Option<&'a PatientRow>,
    pub settings: &'a Settings,
    pub now: DateTime<Utc>,
    pub sms_enabled: bool,
}

/// One message to send.
#[derive(Clone, Debug)]
pub struct Message {
    pub role: RecipientRole,
    pub kind: MessageKind,
    pub to: Recipient,
    pub to_name: Option<String>,
    pub context: MessageContext,
    /// Attach a calendar invite (confirmations).
    pub invite: bool,
    /// QA copies: this other message, rendered with the same context, travels in the same
    /// email (a test booking's therapist notice goes to QA with its patient confirmation).
    pub carries_copy_of: Option<MessageKind>,
}

/// One message of a booking: sent, or skipped with its counted reason.
#[derive(Clone, Debug)]
pub enum MessagePlan {
    Send(Box<Message>),
    Skip {
        channel: Channel,
        role: RecipientRole,
        counter: Counter,
        reason: &'static str,
    },
}

/// A stage's decision for one booking.
#[derive(Clone, Debug)]
pub enum Plan {
    /// Nothing is sent, counted under `counter`. Unless `again`, the decision is recorded in
    /// the ledger, so the booking is counted once and not selected again; `mark` also closes
    /// the stage column. With `again` nothing is recorded and a later run decides anew.
    Skip {
        counter: Counter,
        mark: bool,
        again: bool,
        reason: &'static str,
    },
    Messages(Vec<MessagePlan>),
}

impl Plan {
    /// Decided: recorded, counted once, not marked.
    pub fn skip(counter: Counter, reason: &'static str) -> Plan {
        Plan::Skip {
            counter,
            mark: false,
            again: false,
            reason,
        }
    }
    /// Decided, and the stage is done for this booking (its column is set).
    pub fn skip_and_mark(counter: Counter, reason: &'static str) -> Plan {
        Plan::Skip {
            counter,
            mark: true,
            again: false,
            reason,
        }
    }
    /// Not now: a later run inside the window decides again (nothing recorded).
    pub fn skip_for_now(counter: Counter, reason: &'static str) -> Plan {
        Plan::Skip {
            counter,
            mark: false,
            again: true,
            reason,
        }
    }
}

/// A patient's usable contacts.
pub struct Contacts {
    pub email: Option<EmailAddress>,
    pub phone: PhoneContact,
}

pub enum PhoneContact {
    None,
    Valid(PhoneNumber),
    Invalid,
}

pub fn contacts(p: &PatientRow) -> Contacts {
    let email = p.email.as_deref().and_then(|e| EmailAddress::parse(e).ok());
    let phone = match p.phone_number.as_deref().map(str::trim) {
        None | Some("") => PhoneContact::None,
        Some(raw) => match PhoneNumber::parse(raw) {
            Ok(n) => PhoneContact::Valid(n),
            Err(_) => PhoneContact::Invalid,
        },
    };
    Contacts { email, phone }
}

/// The shared first rules: test data is never sent to, a booking without its patient row is
/// counted, not guessed.
pub fn check_patient<'a>(input: &PlanInput<'a>) -> Result<&'a PatientRow, Plan> {
    if input.booking.is_test {
        return Err(Plan::skip(Counter::SkippedTest, "test booking"));
    }
    let Some(patient) = input.patient else {
        return Err(Plan::skip(
            Counter::SkippedNoPatient,
            "booking has no patient row",
        ));
    };
    if patient.is_test {
        return Err(Plan::skip(Counter::SkippedTest, "test patient"));
    }
    Ok(patient)
}

/// Like [`check_patient`], but a walk-in attendee (no patient row, contact from the payload)
/// also counts: confirmations and reminders reach them (README, "How a booking's status is decided").
pub fn check_recipient<'a>(input: &PlanInput<'a>) -> Result<&'a PatientRow, Plan> {
    match (input.patient, input.attendee) {
        (None, Some(attendee)) if !input.booking.is_test => Ok(attendee),
        _ => check_patient(input),
    }
}

pub const THERAPIST_FALLBACK_NAME: &str = "Ihre Therapeutin bzw. Ihr Therapeut";

/// How old the slot cache may be before its "next free slot" is not shown.
pub fn slot_cache_max_age() -> Duration {
    Duration::hours(6)
}

/// The template context shared by every message of a booking.
pub fn base_context(input: &PlanInput<'_>, patient: Option<&PatientRow>) -> Option<MessageContext> {
    let b = input.booking;
    let start = b.start_time?;
    let end = b.end_time.unwrap_or(start + Duration::minutes(50));
    let booking_kind = b
        .booking_kind
        .as_deref()
        .and_then(BookingKind::parse)
        .unwrap_or(BookingKind::FullSession);
    let fresh_slot = match (b.next_full_time, b.slots_cached_at) {
        (Some(slot), Some(cached))
            if slot > input.now && input.now - cached <= slot_cache_max_age() =>
        {
            Some(slot)
        }
        _ => None,
    };
    let match_link = match (&input.settings.public_base_url, b.match_secure_uuid) {
        (Some(base), Some(secure)) => Some(crate::links::match_link(base, secure)),
        (Some(base), None) => Some(format!("{base}/therapeuten")),
        (None, _) => None,
    };
    Some(MessageContext {
        patient_name: patient
            .and_then(|p| p.name.clone())
            .filter(|n| !n.trim().is_empty()),
        therapist_name: b
            .therapist
            .as_ref()
            .and_then(|t| t.display_name())
            .unwrap_or_else(|| THERAPIST_FALLBACK_NAME.to_string()),
        booking_kind,
        start,
        end,
        video_url: b.video_url.clone().filter(|v| !v.trim().is_empty()),
        location: b
            .location
            .clone()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("integrations:")),
        is_tomorrow: crate::templates::is_tomorrow(input.now, start, input.settings.timezone),
        booking_link: None,
        match_link,
        next_slot: fresh_slot,
        other_therapists_count: None,
        cancelled_by_therapist: false,
        rescheduled: b.rescheduled_from_uid.is_some(),
        unsubscribe_url: None,
    })
}

/// Email plus SMS (when enabled) to the patient, or the counted reason why not (no usable
/// contact, a phone number that is not E.164).
pub fn patient_email_and_sms(
    input: &PlanInput<'_>,
    patient: &PatientRow,
    kind: MessageKind,
    context: MessageContext,
) -> Plan {
    let c = contacts(patient);
    let sms_usable = input.sms_enabled && kind.has_sms();
    let mut out = Vec::new();
    if let Some(email) = c.email.clone() {
        out.push(MessagePlan::Send(Box::new(Message {
            role: RecipientRole::Patient,
            kind,
            to: Recipient::Email(email),
            to_name: patient.name.clone(),
            context: context.clone(),
            invite: false,
            carries_copy_of: None,
        })));
    }
    if sms_usable {
        match &c.phone {
            PhoneContact::Valid(n) => out.push(MessagePlan::Send(Box::new(Message {
                role: RecipientRole::Patient,
                kind,
                to: Recipient::Sms(n.clone()),
                to_name: None,
                context,
                invite: false,
                carries_copy_of: None,
            }))),
            PhoneContact::Invalid => out.push(MessagePlan::Skip {
                channel: Channel::Sms,
                role: RecipientRole::Patient,
                counter: Counter::SkippedInvalidPhone,
                reason: "phone number is not E.164",
            }),
            PhoneContact::None => {}
        }
    }
    let sends = out.iter().any(|m| matches!(m, MessagePlan::Send(_)));
    if !sends && c.email.is_none() {
        return match (c.phone, sms_usable) {
            (PhoneContact::Invalid, true) => Plan::skip(
                Counter::SkippedInvalidPhone,
                "no email and the phone number is not E.164",
            ),
            _ => Plan::skip(Counter::SkippedNoContact, "no usable email or phone"),
        };
    }
    Plan::Messages(out)
}

/// Email only to the patient (followups and recovery).
pub fn patient_email(patient: &PatientRow, kind: MessageKind, context: MessageContext) -> Plan {
    match contacts(patient).email {
        Some(email) => Plan::Messages(vec![MessagePlan::Send(Box::new(Message {
            role: RecipientRole::Patient,
            kind,
            to: Recipient::Email(email),
            to_name: patient.name.clone(),
            context,
            invite: false,
            carries_copy_of: None,
        }))]),
        None => Plan::skip(Counter::SkippedNoContact, "no usable email"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::fixtures::{
        addressed, at, message_skips, now, patient, skip_of, skipped, Case, PATIENT_EMAIL,
        PATIENT_PHONE,
    };
    use uuid::Uuid;

    fn context_of(case: &Case) -> Option<MessageContext> {
        let attendee = PatientRow::attendee_of(&case.booking);
        let input = PlanInput {
            booking: &case.booking,
            patient: case.patient.as_ref(),
            attendee: attendee.as_ref(),
            settings: &case.settings,
            now: case.now,
            sms_enabled: case.sms_enabled,
        };
        base_context(&input, case.patient.as_ref())
    }

    #[test]
    fn the_skip_constructors_say_whether_the_decision_is_recorded_and_marked() {
        let r = "why";
        assert_eq!(
            skip_of(&Plan::skip(Counter::SkippedTest, r)),
            Some((Counter::SkippedTest, false, false, r))
        );
        assert_eq!(
            skip_of(&Plan::skip_and_mark(Counter::SkippedAlreadyBooked, r)),
            Some((Counter::SkippedAlreadyBooked, true, false, r))
        );
        assert_eq!(
            skip_of(&Plan::skip_for_now(Counter::SkippedNoAvailability, r)),
            Some((Counter::SkippedNoAvailability, false, true, r))
        );
    }

    #[test]
    fn contacts_parse_email_and_tell_a_missing_phone_from_an_invalid_one() {
        let c = contacts(&patient());
        assert_eq!(c.email.unwrap().as_str(), PATIENT_EMAIL);
        assert!(matches!(c.phone, PhoneContact::Valid(n) if n.as_str() == PATIENT_PHONE));

        for raw in [None, Some(""), Some("   ")] {
            let p = PatientRow {
                phone_number: raw.map(str::to_string),
                ..patient()
            };
            assert!(matches!(contacts(&p).phone, PhoneContact::None), "{raw:?}");
        }
        let p = PatientRow {
            phone_number: Some("0151 1234".into()),
            email: Some("temp_42@example.de".into()),
            ..patient()
        };
        let c = contacts(&p);
        assert!(matches!(c.phone, PhoneContact::Invalid));
        assert!(c.email.is_none(), "temp_ placeholders are no email");
        let p = PatientRow {
            email: None,
            ..patient()
        };
        assert!(contacts(&p).email.is_none());
    }

    #[test]
    fn check_patient_refuses_test_bookings_missing_rows_and_test_patients() {
        let mut case = Case::new();
        assert_eq!(skip_of(&check_patient_plan(&case)), None);

        case.booking.is_test = true;
        assert_eq!(
            skip_of(&check_patient_plan(&case)),
            Some((Counter::SkippedTest, false, false, "test booking"))
        );
        let mut case = Case::new();
        case.patient = None;
        assert_eq!(
            skip_of(&check_patient_plan(&case)),
            Some((
                Counter::SkippedNoPatient,
                false,
                false,
                "booking has no patient row"
            ))
        );
        let mut case = Case::new();
        case.patient.as_mut().unwrap().is_test = true;
        assert_eq!(
            skip_of(&check_patient_plan(&case)),
            Some((Counter::SkippedTest, false, false, "test patient"))
        );
        // check_patient never takes a walk-in attendee for a patient.
        assert_eq!(
            skipped(&check_patient_plan(&Case::walk_in())),
            Counter::SkippedNoPatient
        );
    }

    /// [`check_patient`] as a plan: its skip, or an empty message list when it passes.
    fn check_patient_plan(case: &Case) -> Plan {
        case.decide(|i| match check_patient(i) {
            Ok(_) => Plan::Messages(vec![]),
            Err(skip) => skip,
        })
    }

    fn check_recipient_name(case: &Case) -> Result<Option<String>, Counter> {
        let plan = case.decide(|i| match check_recipient(i) {
            Ok(p) => Plan::skip(
                Counter::Processed,
                if p.id.is_some() { "row" } else { "attendee" },
            ),
            Err(skip) => skip,
        });
        match skip_of(&plan) {
            Some((Counter::Processed, _, _, who)) => Ok(Some(who.to_string())),
            Some((counter, ..)) => Err(counter),
            None => Ok(None),
        }
    }

    #[test]
    fn check_recipient_takes_a_walk_in_attendee_unless_the_booking_is_a_test() {
        assert_eq!(check_recipient_name(&Case::new()), Ok(Some("row".into())));
        assert_eq!(
            check_recipient_name(&Case::walk_in()),
            Ok(Some("attendee".into()))
        );
        let mut test_walk_in = Case::walk_in();
        test_walk_in.booking.is_test = true;
        assert_eq!(
            check_recipient_name(&test_walk_in),
            Err(Counter::SkippedTest)
        );
        // No patient row and no attendee contact in the payload: nobody to reach.
        let mut nobody = Case::walk_in();
        nobody.booking.attendee_email = None;
        nobody.booking.attendee_phone = None;
        assert_eq!(
            check_recipient_name(&nobody),
            Err(Counter::SkippedNoPatient)
        );
        let mut test_patient = Case::new();
        test_patient.patient.as_mut().unwrap().is_test = true;
        assert_eq!(
            check_recipient_name(&test_patient),
            Err(Counter::SkippedTest)
        );
    }

    #[test]
    fn base_context_needs_a_start_and_fills_the_defaults() {
        let mut case = Case::new();
        case.booking.start_time = None;
        assert!(context_of(&case).is_none());

        let mut case = Case::new();
        case.booking.end_time = None;
        case.booking.booking_kind = None;
        let c = context_of(&case).unwrap();
        assert_eq!(
            c.end,
            c.start + Duration::minutes(50),
            "a session lasts 50 min"
        );
        assert_eq!(c.booking_kind, BookingKind::FullSession);
        assert_eq!(c.patient_name.as_deref(), Some("Jonas Weber"));
        assert_eq!(c.therapist_name, "Lena Brandt");
        assert!(c.is_tomorrow, "Wednesday 15:00 Berlin, judged on Tuesday");
        assert!(!c.rescheduled);
        assert!(!c.cancelled_by_therapist);
        assert_eq!(c.booking_link, None);
        assert_eq!(c.match_link, None, "no PUBLIC_BASE_URL, no link");
        assert_eq!(c.other_therapists_count, None);
        assert_eq!(c.unsubscribe_url, None);

        case.booking.booking_kind = Some("intro".into());
        assert_eq!(context_of(&case).unwrap().booking_kind, BookingKind::Intro);
        case.booking.booking_kind = Some("something_new".into());
        assert_eq!(
            context_of(&case).unwrap().booking_kind,
            BookingKind::FullSession
        );
        case.booking.start_time = Some(at("2026-03-10T15:00:00Z"));
        assert!(!context_of(&case).unwrap().is_tomorrow, "today");
    }

    #[test]
    fn base_context_drops_blank_names_and_links_and_integration_locations() {
        let mut case = Case::new();
        case.patient.as_mut().unwrap().name = Some("  ".into());
        case.booking.therapist = None;
        case.booking.video_url = Some(" ".into());
        case.booking.location = Some("integrations:daily".into());
        let c = context_of(&case).unwrap();
        assert_eq!(c.patient_name, None);
        assert_eq!(c.therapist_name, THERAPIST_FALLBACK_NAME);
        assert_eq!(c.video_url, None);
        assert_eq!(c.location, None);

        case.booking.video_url = Some("https://meet.example/abc".into());
        case.booking.location = Some("Praxis, Hauptstr. 1".into());
        case.booking.rescheduled_from_uid = Some("uid-0".into());
        let c = context_of(&case).unwrap();
        assert_eq!(c.video_url.as_deref(), Some("https://meet.example/abc"));
        assert_eq!(c.location.as_deref(), Some("Praxis, Hauptstr. 1"));
        assert!(c.rescheduled);
        case.booking.location = Some("".into());
        assert_eq!(context_of(&case).unwrap().location, None);
    }

    #[test]
    fn base_context_links_the_match_page_or_the_directory() {
        let mut case = Case::new();
        case.settings.public_base_url = Some("https://www.example.de".into());
        assert_eq!(
            context_of(&case).unwrap().match_link.as_deref(),
            Some("https://www.example.de/therapeuten")
        );
        let secure = Uuid::from_u128(0xabc);
        case.booking.match_secure_uuid = Some(secure);
        assert_eq!(
            context_of(&case).unwrap().match_link,
            Some(format!("https://www.example.de/matches/{secure}"))
        );
    }

    #[test]
    fn the_next_free_slot_shows_only_when_ahead_and_cached_recently() {
        let mut case = Case::new();
        let slot = now() + Duration::days(2);
        case.booking.next_full_time = Some(slot);
        case.booking.slots_cached_at = Some(now() - slot_cache_max_age());
        assert_eq!(context_of(&case).unwrap().next_slot, Some(slot), "6 h old");
        case.booking.slots_cached_at = Some(now() - slot_cache_max_age() - Duration::seconds(1));
        assert_eq!(context_of(&case).unwrap().next_slot, None, "stale cache");
        case.booking.slots_cached_at = Some(now());
        case.booking.next_full_time = Some(now());
        assert_eq!(context_of(&case).unwrap().next_slot, None, "not ahead");
        case.booking.next_full_time = Some(slot);
        case.booking.slots_cached_at = None;
        assert_eq!(context_of(&case).unwrap().next_slot, None, "never cached");
        assert_eq!(slot_cache_max_age(), Duration::hours(6));
    }

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
}
