//! The stage engine against real PostgreSQL, a real SMTP server and an HTTP Twilio stub.

use chrono::Duration;

use crate::harness::TestDb;
use crate::seed::{self, at, Booking};
use crate::transports::Transports;

const NOW: &str = "2026-03-09T15:00:00Z";

async fn setup() -> (TestDb, tokio_postgres::Client, uuid::Uuid) {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    (db, c, t)
}

#[tokio::test]
async fn reminder_24h_goes_out_by_email_and_sms_once_and_marks_the_booking() {
    let (db, c, t) = setup().await;
    let tr = Transports::start().await;
    let p = seed::patient(
        &c,
        "Jonas Weber",
        Some("jonas.weber@example.de"),
        Some("+4915112345678"),
    )
    .await;
    let b = Booking::new(t, p, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;

    let out = tr
        .apply(db.cmd())
        .args(["--now", NOW, "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let counters = &out.json()["stages"][0]["counters"];
    assert_eq!(counters["processed"], 1);
    assert_eq!(counters["sent_email"], 1);
    assert_eq!(counters["sent_sms"], 1);

    let mails = tr.emails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["jonas.weber@example.de".to_string()]);
    assert!(
        mails[0].subject().contains("Erinnerung"),
        "{}",
        mails[0].subject()
    );
    let sms = tr.sms().await;
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].to, "+4915112345678");

    assert_eq!(
        seed::ledger(&c, b).await,
        vec![
            (
                "reminder_24h".into(),
                "email".into(),
                "patient".into(),
                "sent".into()
            ),
            (
                "reminder_24h".into(),
                "sms".into(),
                "patient".into(),
                "sent".into()
            ),
        ]
    );
    let marked: Option<chrono::DateTime<chrono::Utc>> = c
        .query_one(
            "SELECT reminder_24h_sent_at FROM cal_bookings WHERE id = $1",
            &[&b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(marked, Some(at(NOW)));
    let sent = seed::events(&c, "email_sent").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["kind"], "cal_booking_reminder_24h");
    assert_eq!(sent[0]["booking_id"], b.to_string());
    assert_eq!(seed::events(&c, "sms_sent").await.len(), 1);
    assert_eq!(
        seed::events(&c, "cal_booking_followups_completed")
            .await
            .len(),
        1
    );
    let run_rows = db
        .count(
            "SELECT count(*) FROM journey_runs WHERE exit_status = 0 AND finished_at IS NOT NULL",
        )
        .await;
    assert_eq!(run_rows, 1);

    // Five minutes later the same booking is still in the window: nothing is sent again.
    let again = tr
        .apply(db.cmd())
        .args(["--now", "2026-03-09T15:05:00Z", "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    // Issue 9: a handled booking is not selected again (it would fill `--limit`).
    let counters = &again.json()["stages"][0]["counters"];
    assert_eq!(counters["processed"], 0);
    assert_eq!(counters["sent_email"], 0);
    assert_eq!(tr.emails().len(), 1);
    assert_eq!(tr.sms().await.len(), 1);
}

#[tokio::test]
async fn reminder_1h_sms_carries_the_video_link() {
    let (db, c, t) = setup().await;
    let tr = Transports::start().await;
    let p = seed::patient(
        &c,
        "Jonas Weber",
        Some("jonas.weber@example.de"),
        Some("+4915112345678"),
    )
    .await;
    Booking::new(t, p, at(NOW) + Duration::minutes(60))
        .insert(&c)
        .await;
    let out = tr
        .apply(db.cmd())
        .args(["--now", NOW, "reminder-1h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mails = tr.emails();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].subject().contains("Gleich geht"),
        "{}",
        mails[0].subject()
    );
    let sms = tr.sms().await;
    assert_eq!(sms.len(), 1);
    assert!(
        sms[0].body.contains("https://app.cal.com/video/abc123"),
        "{}",
        sms[0].body
    );
}

#[tokio::test]
async fn cancelled_rejected_rescheduled_and_finished_bookings_are_never_reminded() {
    let (db, c, t) = setup().await;
    let tr = Transports::start().await;
    let p = seed::patient(
        &c,
        "Jonas Weber",
        Some("jonas.weber@example.de"),
        Some("+4915112345678"),
    )
    .await;
    let start = at(NOW) + Duration::hours(24);
    for status in [
        "CANCELLED",
        "cancelled",
        "RESCHEDULED",
        "rejected",
        "COMPLETED",
        "NO_SHOW_GUEST",
        "no_show_host",
    ] {
        Booking::new(t, p, start)
            .status(Some(status))
            .insert(&c)
            .await;
    }
    let pending = Booking::new(t, p, start)
        .status(Some("pending"))
        .insert(&c)
        .await;
    let unknown = Booking::new(t, p, start).status(None).insert(&c).await;

    let out = tr
        .apply(db.cmd())
        .args(["--now", NOW, "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let counters = &out.json()["stages"][0]["counters"];
    // Issue 9 / SPEC §1: PENDING is not active (the host has not accepted yet).
    assert_eq!(
        counters["processed"], 1,
        "only the pre-inserted booking is active"
    );
    assert_eq!(tr.emails().len(), 1);
    let reminded = db
        .count("SELECT count(*) FROM cal_bookings WHERE reminder_24h_sent_at IS NOT NULL")
        .await;
    assert_eq!(reminded, 1);
    assert_eq!(seed::ledger(&c, unknown).await.len(), 2);
    assert!(seed::ledger(&c, pending).await.is_empty());
}

#[tokio::test]
async fn an_email_rejected_with_451_is_retried_alone_and_the_sms_is_not_resent() {
    let (db, c, t) = setup().await;
    let tr = Transports::start().await;
    let p = seed::patient(
        &c,
        "Jonas Weber",
        Some("jonas.weber@example.de"),
        Some("+4915112345678"),
    )
    .await;
    let b = Booking::new(t, p, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;

    tr.smtp_reply_451(true);
    let first = tr
        .apply(db.cmd())
        .args(["--now", NOW, "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(first.code, 1, "a delivery failed: {}", first.stderr);
    let counters = &first.json()["stages"][0]["counters"];
    assert_eq!(counters["retry_scheduled"], 1);
    assert_eq!(counters["sent_sms"], 1);
    assert_eq!(tr.emails().len(), 0);
    assert_eq!(tr.sms().await.len(), 1);
    assert_eq!(
        seed::ledger(&c, b).await,
        vec![
            (
                "reminder_24h".into(),
                "email".into(),
                "patient".into(),
                "retry".into()
            ),
            (
                "reminder_24h".into(),
                "sms".into(),
                "patient".into(),
                "sent".into()
            ),
        ]
    );

    tr.smtp_reply_451(false);
    let second = tr
        .apply(db.cmd())
        .args(["--now", "2026-03-09T15:05:00Z", "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    let counters = &second.json()["stages"][0]["counters"];
    assert_eq!(counters["sent_email"], 1);
    assert_eq!(counters["sent_sms"], 0);
    assert_eq!(tr.emails().len(), 1);
    assert_eq!(tr.sms().await.len(), 1, "the SMS must not be sent twice");
    let attempts: i32 = c
        .query_one(
            "SELECT attempts FROM journey_deliveries WHERE booking_id = $1 AND channel = 'email'",
            &[&b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 2);
}

#[tokio::test]
async fn both_channels_failing_leaves_the_stage_open_and_exits_1() {
    let (db, c, t) = setup().await;
    let tr = Transports::start().await;
    tr.twilio_reply(
        429,
        serde_json::json!({"code": 20429, "message": "Too Many Requests"}),
    )
    .await;
    let p = seed::patient(
        &c,
        "Jonas Weber",
        Some("jonas.weber@example.de"),
        Some("+4915112345678"),
    )
    .await;
    let b = Booking::new(t, p, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    tr.smtp_reply_451(true);
    let out = tr
        .apply(db.cmd())
        .args(["--now", NOW, "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.json()["stages"][0]["counters"]["retry_scheduled"], 2);
    let marked: Option<chrono::DateTime<chrono::Utc>> = c
        .query_one(
            "SELECT reminder_24h_sent_at FROM cal_bookings WHERE id = $1",
            &[&b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(marked, None, "the stage stays open");
    assert_eq!(seed::events(&c, "error").await.len(), 2);
}

#[tokio::test]
async fn test_bookings_and_test_patients_never_get_stage_messages() {
    let (db, c, t) = setup().await;
    let tr = Transports::start().await;
    let start = at(NOW) + Duration::hours(24);
    let real = seed::patient(&c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    let mut test_booking = Booking::new(t, real, start);
    test_booking.is_test = true;
    test_booking.insert(&c).await;
    let qa = seed::test_patient(&c, "qa@example.de").await;
    Booking::new(t, qa, start).insert(&c).await;

    let out = tr
        .apply(db.cmd())
        .args(["--now", NOW, "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let counters = &out.json()["stages"][0]["counters"];
    assert_eq!(counters["skipped_test"], 2);
    assert_eq!(tr.emails().len(), 0);
}

#[tokio::test]
async fn contacts_decide_the_channels_and_every_skip_is_counted() {
    let (db, c, t) = setup().await;
    let tr = Transports::start().await;
    let start = at(NOW) + Duration::hours(24);
    // temp_ address = no email; phone only → SMS only.
    let phone_only = seed::patient(
        &c,
        "A",
        Some("temp_123@kaufmann.example"),
        Some("+4915112345678"),
    )
    .await;
    // email and a phone that is not E.164 → email sent, SMS skipped.
    let bad_phone = seed::patient(&c, "B", Some("b@example.de"), Some("0151 1234")).await;
    // nothing usable
    let nothing = seed::patient(&c, "C", Some(""), None).await;
    for p in [phone_only, bad_phone, nothing] {
        Booking::new(t, p, start).insert(&c).await;
    }
    let mut no_patient = Booking::new(t, phone_only, start);
    no_patient.patient = None;
    no_patient.insert(&c).await;

    let out = tr
        .apply(db.cmd())
        .args(["--now", NOW, "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let counters = &out.json()["stages"][0]["counters"];
    assert_eq!(counters["processed"], 4);
    assert_eq!(counters["sent_sms"], 1);
    assert_eq!(counters["sent_email"], 1);
    assert_eq!(counters["skipped_invalid_phone"], 1);
    assert_eq!(counters["skipped_no_contact"], 1);
    assert_eq!(counters["skipped_no_patient"], 1);

    // Without any SMS transport, the phone-only patient has no contact.
    let db2 = TestDb::migrated().await;
    let c2 = db2.client().await;
    let t2 = seed::therapist(&c2, "lena-brandt").await;
    let p2 = seed::patient(&c2, "A", None, Some("+4915112345678")).await;
    Booking::new(t2, p2, start).insert(&c2).await;
    let out = tr
        .apply_email_only(db2.cmd())
        .args(["--now", NOW, "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["stages"][0]["counters"]["skipped_no_contact"], 1);
    assert!(out.stderr.contains("SMS is off"), "{}", out.stderr);
}

#[tokio::test]
async fn confirmation_recovery_sends_whichever_confirmation_is_missing_with_an_invite() {
    let (db, c, t) = setup().await;
    let tr = Transports::start().await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    let start = at(NOW) + Duration::days(2);
    // Neither went out (the webhook process died after commit).
    let both = Booking::new(t, p, start)
        .unconfirmed(at(NOW) - Duration::minutes(15))
        .insert(&c)
        .await;
    // Only the therapist notice is missing.
    let mut half = Booking::new(t, p, start).unconfirmed(at(NOW) - Duration::minutes(20));
    half.uid = "half-uid".into();
    let half = half.insert(&c).await;
    c.execute(
        "UPDATE cal_bookings SET client_confirmation_sent_at = $2 WHERE id = $1",
        &[&half, &at(NOW)],
    )
    .await
    .unwrap();
    // Too fresh: the webhook may still be sending.
    Booking::new(t, p, start)
        .unconfirmed(at(NOW) - Duration::minutes(3))
        .insert(&c)
        .await;

    let out = tr
        .apply(db.cmd())
        .args(["--now", NOW, "--json", "confirmation-recovery"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let counters = &out.json()["stages"][0]["counters"];
    assert_eq!(counters["processed"], 2);
    assert_eq!(counters["sent_email"], 3);
    let mails = tr.emails();
    assert_eq!(mails.len(), 3);
    let to_patient: Vec<_> = mails
        .iter()
        .filter(|m| m.to[0] == "jonas.weber@example.de")
        .collect();
    assert_eq!(to_patient.len(), 1);
    assert!(String::from_utf8_lossy(&to_patient[0].raw).contains("text/calendar"));
    assert_eq!(
        seed::ledger(&c, both).await,
        vec![
            (
                "confirmation".into(),
                "email".into(),
                "patient".into(),
                "sent".into()
            ),
            (
                "confirmation".into(),
                "email".into(),
                "therapist".into(),
                "sent".into()
            ),
        ]
    );
    assert_eq!(
        db.count("SELECT count(*) FROM cal_bookings WHERE therapist_notification_sent_at IS NULL")
            .await,
        1,
        "only the fresh booking is left"
    );
}

#[tokio::test]
async fn a_failing_patient_lookup_is_an_error_never_no_patient() {
    let (db, c, t) = setup().await;
    let tr = Transports::start().await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    let b = Booking::new(t, p, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    c.batch_execute("ALTER TABLE people RENAME COLUMN email TO email_address")
        .await
        .unwrap();

    let out = tr
        .apply(db.cmd())
        .args(["--now", NOW, "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    // Two errors: linking walk-in bookings (issue 9) reads people.email too, then the
    // patient lookup of the booking.
    let counters = &out.json()["stages"][0]["counters"];
    assert_eq!(counters["errors"], 2);
    assert_eq!(counters["skipped_no_patient"], 0);
    assert!(
        out.stderr.contains(&b.to_string()),
        "the log names the booking: {}",
        out.stderr
    );
    let errors = seed::events(&c, "error").await;
    assert_eq!(errors.len(), 2);
    assert_eq!(
        errors
            .iter()
            .filter(|e| e["booking_id"] == b.to_string())
            .count(),
        1
    );
}

#[tokio::test]
async fn dry_run_lists_the_plan_with_masked_recipients_and_writes_nothing() {
    let (db, c, t) = setup().await;
    let tr = Transports::start().await;
    let p = seed::patient(
        &c,
        "Jonas Weber",
        Some("jonas.weber@example.de"),
        Some("+4915112344567"),
    )
    .await;
    Booking::new(t, p, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    let snapshot =
        "SELECT (SELECT count(*) FROM journey_deliveries) + (SELECT count(*) FROM events) \
                    + (SELECT count(*) FROM journey_runs) \
                    + (SELECT count(*) FROM cal_bookings WHERE reminder_24h_sent_at IS NOT NULL)";
    let before = db.count(snapshot).await;

    let out = tr
        .apply(db.cmd())
        .args(["--now", NOW, "--json", "reminder-24h", "--dry-run"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["dry_run"], true);
    let planned = report["stages"][0]["planned"].as_array().unwrap();
    assert_eq!(planned.len(), 2);
    let recipients: Vec<&str> = planned
        .iter()
        .map(|p| p["recipient"].as_str().unwrap())
        .collect();
    assert!(recipients.contains(&"j***@example.de"), "{recipients:?}");
    assert!(recipients.contains(&"+49***4567"), "{recipients:?}");
    assert!(
        !out.stdout.contains("jonas.weber@"),
        "unmasked address in report"
    );
    assert_eq!(db.count(snapshot).await, before);
    assert_eq!(tr.emails().len(), 0);
    assert_eq!(tr.sms().await.len(), 0);
}

#[tokio::test]
async fn a_real_run_without_an_email_transport_exits_2_naming_the_variable() {
    let (db, _c, _t) = setup().await;
    let out = db.cmd().args(["--now", NOW, "reminder-24h"]).run().await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("SMTP_URL"), "{}", out.stderr);
    assert!(out.stderr.contains("EMAIL_OUTBOX_DIR"), "{}", out.stderr);
}

#[tokio::test]
async fn a_session_on_the_dst_change_day_is_reminded_24_real_hours_ahead() {
    let (db, c, t) = setup().await;
    let tr = Transports::start().await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    // Sunday 29 March 2026, 10:00 in Berlin (CEST, UTC+2) = 08:00Z. 24 real hours earlier is
    // Saturday 08:00Z = 09:00 local (CET).
    Booking::new(t, p, at("2026-03-29T08:00:00Z"))
        .insert(&c)
        .await;
    let out = tr
        .apply(db.cmd())
        .args(["--now", "2026-03-28T08:00:00Z", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mails = tr.emails();
    assert_eq!(mails.len(), 1);
    let text = mails[0].text();
    assert!(text.contains("29. März 2026"), "{text}");
    assert!(
        text.contains("10:00"),
        "local time after the change: {text}"
    );
    assert!(
        mails[0].subject().contains("morgen"),
        "{}",
        mails[0].subject()
    );
}

#[tokio::test]
async fn the_metrics_file_holds_the_runs_counters_in_prometheus_text_format() {
    let (db, c, t) = setup().await;
    let tr = Transports::start().await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    Booking::new(t, p, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journeyctl.prom");
    let out = tr
        .apply_email_only(db.cmd())
        .args(["--now", NOW, "reminder-24h", "--metrics-file"])
        .arg(&path)
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("# TYPE journeyctl_stage_count gauge"),
        "{text}"
    );
    assert!(
        text.contains(
            "journeyctl_stage_count{command=\"reminder-24h\",stage=\"reminder_24h\",counter=\"sent_email\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("journeyctl_run_exit_status{command=\"reminder-24h\",dry_run=\"false\"} 0"),
        "{text}"
    );
    // Nothing but the file itself is left in the directory (written beside it, then renamed).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
