//! What messages contain and look like, on the real sent mail and SMS: names that cannot
//! inject headers, calendar invites that move and cancel the same entry, SMS names in GSM-7,
//! and the plain-text layout.

use std::sync::Arc;

use chrono::Duration;
use mail_parser::MimeHeaders;
use uuid::Uuid;

use crate::harness::TestDb;
use crate::seed::{self, at, Booking};
use crate::support;
use crate::transports::{Mail, Transports};

const NOW: &str = "2026-03-09T15:00:00Z";

/// The `.ics` attachment of a mail: its content type and its unfolded text.
pub fn invite(m: &Mail) -> Option<(String, String)> {
    let parsed = mail_parser::MessageParser::default()
        .parse(&m.raw)
        .expect("received mail parses");
    let found = parsed.attachments().find_map(|a| {
        let ct = a.content_type()?;
        if ct.ctype() != "text" || ct.subtype() != Some("calendar") {
            return None;
        }
        let params = ct
            .attributes()
            .unwrap_or_default()
            .iter()
            .map(|a| format!("; {}={}", a.name, a.value))
            .collect::<String>();
        let text = String::from_utf8_lossy(a.contents()).replace("\r\n ", "");
        Some((format!("text/calendar{params}"), text))
    });
    found
}

/// The value of one property line (`NAME:value` or `NAME;params:value`), whole line returned.
fn ics_line(ics: &str, name: &str) -> Option<String> {
    ics.split("\r\n")
        .find(|l| l.starts_with(&format!("{name}:")) || l.starts_with(&format!("{name};")))
        .map(str::to_string)
}

fn ics_value(ics: &str, name: &str) -> Option<String> {
    ics_line(ics, name).and_then(|l| l.split_once(':').map(|(_, v)| v.to_string()))
}

fn header_lines(m: &Mail) -> Vec<String> {
    let raw = String::from_utf8_lossy(&m.raw).into_owned();
    let head = raw.split("\r\n\r\n").next().unwrap_or("").to_string();
    head.split("\r\n").map(str::to_string).collect()
}

#[tokio::test]
async fn a_line_break_in_a_name_never_injects_a_header_and_every_message_still_goes_out() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    c.execute(
        "UPDATE therapists SET last_name = E'Brandt\\nX-Evil: 1' WHERE id = $1",
        &[&t],
    )
    .await
    .unwrap();
    let p = seed::patient(
        &c,
        "Anna\r\nBcc: evil@example.org",
        Some("anna@example.de"),
        Some("+4915112345678"),
    )
    .await;
    Booking::new(t, p, at(NOW) + Duration::hours(24))
        .unconfirmed(at(NOW) - Duration::hours(1))
        .insert(&c)
        .await;

    for command in ["confirmation-recovery", "reminder-24h"] {
        let out = tr
            .apply(db.cmd())
            .args(["--now", NOW, "--json", command])
            .run()
            .await;
        assert_eq!(out.code, 0, "{command}: {}", out.stderr);
    }

    let mails = tr.emails();
    assert_eq!(mails.len(), 3, "confirmation, therapist notice, reminder");
    for m in &mails {
        assert_eq!(m.to.len(), 1, "one envelope recipient: {:?}", m.to);
        assert!(!m.to[0].contains("evil"), "{:?}", m.to);
        let headers = header_lines(m);
        for h in &headers {
            let lower = h.to_ascii_lowercase();
            assert!(!lower.starts_with("bcc:"), "injected header {h:?}");
            assert!(!lower.starts_with("x-evil"), "injected header {h:?}");
        }
        assert_eq!(
            headers
                .iter()
                .filter(|h| h.to_ascii_lowercase().starts_with("to:"))
                .count(),
            1
        );
        let subject = m.subject();
        assert!(!subject.contains(['\r', '\n']), "{subject:?}");
        if let Some((_, ics)) = invite(m) {
            assert!(!ics.split("\r\n").any(|l| l.starts_with("X-Evil")), "{ics}");
        }
    }
    let confirmation = mails
        .iter()
        .find(|m| m.to[0] == "anna@example.de" && m.subject().contains("bestätigt"))
        .expect("the patient's confirmation");
    assert!(
        confirmation.subject().contains("Lena Brandt X-Evil: 1"),
        "the name is kept, on one line: {}",
        confirmation.subject()
    );
    let sms = tr.sms().await;
    assert_eq!(sms.len(), 1);
    assert!(!sms[0].body.contains(['\r', '\n']), "{:?}", sms[0].body);
}

#[tokio::test]
async fn a_rescheduled_bookings_invite_keeps_the_original_uid_with_a_higher_sequence() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    let first =
        Booking::new(t, p, at(NOW) + Duration::days(3)).unconfirmed(at(NOW) - Duration::hours(1));
    let first_id = first.insert(&c).await;

    support::email_confirmation_recovery(&db, &tr, NOW).await;

    // Cal.com moves the session: the new booking carries the first invite's UID and a higher
    // sequence (as the webhook stores it).
    let moved = Booking::new(t, p, at(NOW) + Duration::days(4))
        .unconfirmed(at(NOW) - Duration::minutes(30));
    let moved_id = moved.insert(&c).await;
    c.execute(
        "UPDATE cal_bookings SET status = 'RESCHEDULED', rescheduled_to_uid = $2 WHERE id = $1",
        &[&first_id, &moved.uid],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE cal_bookings SET ical_uid = $2, ical_sequence = 1, rescheduled_from_uid = $2
         WHERE id = $1",
        &[&moved_id, &first.uid],
    )
    .await
    .unwrap();
    support::email_confirmation_recovery(&db, &tr, NOW).await;

    let to_patient: Vec<Mail> = tr
        .emails()
        .into_iter()
        .filter(|m| m.to[0] == "jonas.weber@example.de")
        .collect();
    assert_eq!(to_patient.len(), 2);
    let (ct1, ics1) = invite(&to_patient[0]).expect("first invite");
    let (_, ics2) = invite(&to_patient[1]).expect("second invite");
    assert!(ct1.contains("method=REQUEST"), "{ct1}");
    for ics in [&ics1, &ics2] {
        assert_eq!(
            ics_value(ics, "METHOD").as_deref(),
            Some("REQUEST"),
            "{ics}"
        );
        let organizer = ics_line(ics, "ORGANIZER").unwrap_or_default();
        assert!(
            organizer.ends_with(":mailto:lena-brandt@praxis.example"),
            "{ics}"
        );
        assert!(organizer.contains("CN=Lena Brandt"), "{ics}");
        let attendee = ics_line(ics, "ATTENDEE").unwrap_or_default();
        assert!(
            attendee.ends_with(":mailto:jonas.weber@example.de"),
            "{ics}"
        );
    }
    assert_eq!(ics_value(&ics1, "UID"), ics_value(&ics2, "UID"));
    assert!(
        ics_value(&ics1, "UID")
            .unwrap_or_default()
            .starts_with(&first.uid),
        "{ics1}"
    );
    let seq = |ics: &str| -> i64 {
        ics_value(ics, "SEQUENCE")
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1)
    };
    assert!(seq(&ics2) > seq(&ics1), "{ics1}\n{ics2}");
}

/// A journey built from the library, pointed at the test database and SMTP server (the
/// webhook's call site of the cancellation notice is wired separately).
async fn journey(db: &TestDb, tr: &Transports) -> journeyctl::stages::Journey {
    use journeyctl::cli::SettingsArgs;
    use journeyctl::config::Settings;
    let settings = Settings::from_args(&SettingsArgs {
        smtp_url: Some(tr.smtp.url()),
        email_from: Some("Praxisteam <termine@praxis.example>".into()),
        ..Default::default()
    })
    .unwrap();
    let application_name = journeyctl::db::ledger::process_application_name();
    let pool = journeyctl::db::connect_as(
        &journeyctl::secret::Secret::new(&db.url),
        4,
        &application_name,
    )
    .await
    .unwrap();
    journeyctl::stages::Journey {
        db: pool,
        templates: Arc::new(
            journeyctl::templates::Templates::load(None, settings.timezone).unwrap(),
        ),
        senders: journeyctl::notify::Senders::from_settings(&settings, false).unwrap(),
        clock: journeyctl::clock::Clock::fixed(at(NOW) + Duration::hours(1)),
        run_id: Uuid::new_v4(),
        application_name,
        message_id_domain: "praxis.example".into(),
        control: Default::default(),
        settings: Arc::new(settings),
    }
}

#[tokio::test]
async fn a_cancelled_booking_whose_patient_got_an_invite_gets_one_cancellation_notice() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    let booking =
        Booking::new(t, p, at(NOW) + Duration::days(3)).unconfirmed(at(NOW) - Duration::hours(1));
    let b = booking.insert(&c).await;
    // Never confirmed (so no invite to take back), and a test booking: neither gets a notice.
    let unconfirmed = Booking::new(t, p, at(NOW) + Duration::days(5))
        .cancelled(at(NOW))
        .unconfirmed(at(NOW) - Duration::days(1))
        .insert(&c)
        .await;
    let mut test_booking = Booking::new(t, p, at(NOW) + Duration::days(6)).cancelled(at(NOW));
    test_booking.is_test = true;
    let test_booking = test_booking.insert(&c).await;

    support::email_confirmation_recovery(&db, &tr, NOW).await;
    let sent_invite = tr
        .emails()
        .into_iter()
        .find(|m| m.to[0] == "jonas.weber@example.de")
        .expect("the confirmation");
    let (_, request) = invite(&sent_invite).expect("the confirmation's invite");

    c.execute(
        "UPDATE cal_bookings SET status = 'CANCELLED', cancelled_at = $2 WHERE id = $1",
        &[&b, &(at(NOW) + Duration::minutes(50))],
    )
    .await
    .unwrap();
    let j = journey(&db, &tr).await;
    let before = tr.emails().len();
    for _ in 0..2 {
        let report = journeyctl::stages::driver::notify_cancellation(&j, b)
            .await
            .unwrap();
        assert!(!report.failed());
    }
    for other in [unconfirmed, test_booking] {
        let report = journeyctl::stages::driver::notify_cancellation(&j, other)
            .await
            .unwrap();
        assert!(!report.failed());
    }

    let mails = tr.emails();
    assert_eq!(mails.len(), before + 1, "exactly one cancellation notice");
    let notice = mails.last().unwrap();
    assert_eq!(notice.to, vec!["jonas.weber@example.de".to_string()]);
    assert!(
        notice.subject().contains("abgesagt"),
        "{}",
        notice.subject()
    );
    assert!(notice.text().contains("Jonas Weber"), "{}", notice.text());
    let (ct, cancel) = invite(notice).expect("the cancellation carries an invite");
    assert!(ct.contains("method=CANCEL"), "{ct}");
    assert_eq!(
        ics_value(&cancel, "METHOD").as_deref(),
        Some("CANCEL"),
        "{cancel}"
    );
    assert_eq!(ics_value(&cancel, "STATUS").as_deref(), Some("CANCELLED"));
    assert_eq!(ics_value(&cancel, "UID"), ics_value(&request, "UID"));
    let seq = |ics: &str| -> i64 {
        ics_value(ics, "SEQUENCE")
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1)
    };
    assert!(seq(&cancel) > seq(&request), "{request}\n{cancel}");
    assert!(ics_line(&cancel, "ATTENDEE")
        .unwrap_or_default()
        .ends_with(":mailto:jonas.weber@example.de"));

    assert!(seed::ledger(&c, b).await.contains(&(
        "cancellation_notice".into(),
        "email".into(),
        "patient".into(),
        "sent".into()
    )));
    let kinds: Vec<String> = seed::events(&c, "email_sent")
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "cal_booking_cancellation_notice")
            .count(),
        1,
        "{kinds:?}"
    );
}

#[tokio::test]
async fn sms_names_outside_gsm7_are_transliterated_never_question_marks() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let t = seed::therapist(&c, "ayse-dogan").await;
    c.execute(
        "UPDATE therapists SET first_name = 'Ayşe', last_name = 'Doğan-Kılıç 🌿' WHERE id = $1",
        &[&t],
    )
    .await
    .unwrap();
    let p = seed::patient(&c, "Jonas Weber", None, Some("+4915112345678")).await;
    Booking::new(t, p, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    let out = tr
        .apply(db.cmd())
        .args(["--now", NOW, "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let sms = tr.sms().await;
    assert_eq!(sms.len(), 1);
    let body = &sms[0].body;
    assert!(body.contains("mit Ayse Dogan-Kilic ist"), "{body}");
    assert!(!body.contains('?'), "{body}");
    assert!(journeyctl::domain::gsm7::fits_one_segment(body), "{body}");
}

#[tokio::test]
async fn the_plain_text_confirmation_has_a_blank_line_after_the_video_link() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    Booking::new(t, p, at(NOW) + Duration::days(2))
        .unconfirmed(at(NOW) - Duration::hours(1))
        .insert(&c)
        .await;
    support::email_confirmation_recovery(&db, &tr, NOW).await;
    let mail = tr
        .emails()
        .into_iter()
        .find(|m| m.to[0] == "jonas.weber@example.de")
        .expect("the confirmation");
    let text = mail.text().replace("\r\n", "\n");
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.contains("https://app.cal.com/video/abc123"))
        .unwrap_or_else(|| panic!("no video link in\n{text}"));
    assert_eq!(lines.get(i + 1).copied(), Some(""), "{text}");
}
