//! Unit tests of `stages::plan` (no PostgreSQL).

use super::*;
use crate::stages::fixtures::{
    at, now, patient, skip_of, skipped, Case, PATIENT_EMAIL, PATIENT_PHONE,
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
