//! Issue 9, the stage side: which bookings the stages select, and how the driver delivers and
//! counts. Every test runs the real binary against real PostgreSQL, SMTP and the Twilio stub.

use chrono::Duration;
use uuid::Uuid;

use crate::harness::TestDb;
use crate::seed::{self, at, Booking};
use crate::transports::Transports;

const NOW: &str = "2026-03-09T15:00:00Z";

async fn setup() -> (TestDb, tokio_postgres::Client, Uuid, Transports) {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    (db, c, t, Transports::start().await)
}

/// One stage run with `--json`, its exit code and its first stage's counters.
async fn stage(
    db: &TestDb,
    tr: &Transports,
    now: &str,
    args: &[&str],
) -> (i32, serde_json::Value, String) {
    let out = tr
        .apply(db.cmd())
        .args(["--now", now, "--json"])
        .args(args)
        .run()
        .await;
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let counters = out.json()["stages"][0]["counters"].clone();
    (out.code, counters, out.stderr)
}

fn minutes_after(base: &str, minutes: i64) -> String {
    (at(base) + Duration::minutes(minutes))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn patient_id_of(c: &tokio_postgres::Client, booking: Uuid) -> Option<Uuid> {
    c.query_one(
        "SELECT patient_id FROM cal_bookings WHERE id = $1",
        &[&booking],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn a_pending_booking_gets_no_confirmation_no_therapist_notice_and_no_reminder() {
    let (db, c, t, tr) = setup().await;
    let p = seed::patient(
        &c,
        "Jonas Weber",
        Some("jonas.weber@example.de"),
        Some("+4915112345678"),
    )
    .await;
    for status in ["PENDING", "pending"] {
        Booking::new(t, p, at(NOW) + Duration::hours(24))
            .status(Some(status))
            .unconfirmed(at(NOW) - Duration::minutes(30))
            .insert(&c)
            .await;
    }
    let (code, counters, err) = stage(&db, &tr, NOW, &["confirmation-recovery"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(counters["processed"], 0);
    let (code, counters, err) = stage(&db, &tr, NOW, &["reminder-24h"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(counters["processed"], 0);
    assert!(tr.emails().is_empty(), "a pending booking was written to");
    assert!(tr.sms().await.is_empty());
}

#[tokio::test]
async fn confirmation_recovery_confirms_a_booking_created_eight_days_ago_whose_session_is_ahead() {
    let (db, c, t, tr) = setup().await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    let b = Booking::new(t, p, at(NOW) + Duration::days(2))
        .unconfirmed(at(NOW) - Duration::days(8))
        .insert(&c)
        .await;
    let (code, counters, err) = stage(&db, &tr, NOW, &["confirmation-recovery"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(counters["sent_email"], 2, "{counters}");
    let mut to: Vec<String> = tr.emails().iter().map(|m| m.to[0].clone()).collect();
    to.sort();
    assert_eq!(
        to,
        vec![
            "jonas.weber@example.de".to_string(),
            "lena-brandt@praxis.example".to_string()
        ]
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM cal_bookings WHERE id = '{b}'
               AND client_confirmation_sent_at IS NOT NULL
               AND therapist_notification_sent_at IS NOT NULL"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn a_walk_in_attendee_is_confirmed_and_reminded_at_the_attendee_contact_and_linked_once_a_person_exists(
) {
    let (db, c, t, tr) = setup().await;
    let mut walk_in = Booking::new(t, Uuid::nil(), at(NOW) + Duration::hours(24))
        .unconfirmed(at(NOW) - Duration::minutes(20));
    walk_in.patient = None;
    let b = walk_in.insert(&c).await;
    c.execute(
        "UPDATE cal_bookings SET attendee_email = 'Mira.Kaya@Example.de',
                attendee_name = 'Mira Kaya', attendee_phone = '+4917612345678'
          WHERE id = $1",
        &[&b],
    )
    .await
    .unwrap();

    let (code, counters, err) = stage(&db, &tr, NOW, &["confirmation-recovery"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(counters["sent_email"], 2, "{counters}");
    assert_eq!(counters["skipped_no_patient"], 0, "{counters}");
    let confirmation: Vec<_> = tr
        .emails()
        .into_iter()
        .filter(|m| m.to[0].eq_ignore_ascii_case("mira.kaya@example.de"))
        .collect();
    assert_eq!(confirmation.len(), 1, "the attendee is confirmed");
    assert!(
        confirmation[0].text().contains("Mira Kaya"),
        "{}",
        confirmation[0].text()
    );

    let (code, counters, err) = stage(&db, &tr, NOW, &["reminder-24h"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(counters["sent_email"], 1, "{counters}");
    assert_eq!(counters["sent_sms"], 1, "{counters}");
    assert_eq!(tr.sms().await[0].to, "+4917612345678");
    assert_eq!(patient_id_of(&c, b).await, None);

    // The marketplace creates the person later (the address in another case): the next stage
    // run links the booking to them.
    let person = seed::patient(&c, "Mira Kaya", Some("mira.kaya@example.de"), None).await;
    let (code, _, err) = stage(&db, &tr, NOW, &["reminder-1h"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(patient_id_of(&c, b).await, Some(person));
}

#[tokio::test]
async fn a_test_bookings_therapist_notice_also_goes_to_the_qa_address() {
    let (db, c, _t, tr) = setup().await;
    let patient = "7b1f3c2e-5a4d-4c8e-9f10-2a3b4c5d6e7f";
    c.batch_execute(&format!(
        "INSERT INTO people (id, name, email) VALUES ('{patient}', 'Jonas Weber', 'jonas.weber@example.de');
         UPDATE therapists SET cal_username = 'lena-brandt-old' WHERE true;
         INSERT INTO therapists (id, first_name, last_name, email, cal_username,
                                 cal_intro_event_type_id, cal_full_session_event_type_id)
           VALUES (gen_random_uuid(), 'Lena', 'Brandt', 'lena.brandt@praxis.example',
                   'lena-brandt', 1187, 1188);"
    ))
    .await
    .unwrap();
    let fixture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cal/booking_created_full.json");
    let mut body: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    body["payload"]["metadata"]["kh_test"] = serde_json::Value::Bool(true);
    let body = serde_json::to_vec(&body).unwrap();
    let secret = "whsec_journeyctl_test_0001";
    let sig = journeyctl::webhook::verify::sign(&journeyctl::secret::Secret::new(secret), &body);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, &body).unwrap();

    let out = tr
        .apply(db.cmd())
        .env("CAL_WEBHOOK_SECRET", secret)
        .env("QA_NOTIFY_EMAIL", "qa@praxis.example")
        .args([
            "--now",
            "2026-03-02T09:12:05Z",
            "--json",
            "webhook",
            "--file",
        ])
        .arg(&file)
        .args(["--signature", &sig])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mails = tr.emails();
    assert!(
        mails.iter().all(|m| m.to == vec!["qa@praxis.example"]),
        "a test booking reached a real person"
    );
    let qa_text: String = mails.iter().map(|m| m.text()).collect();
    assert!(
        qa_text.contains("Neue Buchung"),
        "the therapist notice did not reach QA: {qa_text}"
    );
    assert!(
        mails.iter().any(|m| m.subject().contains("Termin")),
        "the patient confirmation reached QA"
    );
    let rows = db
        .count("SELECT count(*) FROM journey_deliveries WHERE recipient_role = 'qa' AND status = 'sent'")
        .await;
    assert_eq!(rows as usize, mails.len());

    // Recovery later finds nothing left to do for it (and counts no test booking again).
    let (code, counters, err) =
        stage(&db, &tr, "2026-03-02T10:00:00Z", &["confirmation-recovery"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(counters["processed"], 0, "{counters}");
    assert_eq!(tr.emails().len(), mails.len());
}

#[tokio::test]
async fn an_email_that_failed_to_render_while_the_sms_went_out_is_sent_alone_by_the_next_run() {
    let (db, c, t, tr) = setup().await;
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
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(
        broken.path().join("reminder_24h.txt.hbs"),
        "{{no_such_field}}",
    )
    .unwrap();

    let first = tr
        .apply(db.cmd())
        .env("JOURNEY_TEMPLATES_DIR", broken.path())
        .args(["--now", NOW, "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(first.code, 1, "{}", first.stderr);
    assert_eq!(first.json()["stages"][0]["counters"]["sent_sms"], 1);
    let email_row = c
        .query_opt(
            "SELECT status, last_error FROM journey_deliveries
              WHERE booking_id = $1 AND channel = 'email'",
            &[&b],
        )
        .await
        .unwrap();
    let (status, error): (String, Option<String>) = email_row
        .map(|r| (r.get(0), r.get(1)))
        .expect("the failed email is in the ledger, visible to audit");
    assert_eq!(status, "retry");
    assert!(error.is_some_and(|e| !e.is_empty()));

    let (code, counters, err) = stage(&db, &tr, &minutes_after(NOW, 5), &["reminder-24h"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(counters["sent_email"], 1, "{counters}");
    assert_eq!(counters["sent_sms"], 0, "{counters}");
    assert_eq!(tr.emails().len(), 1);
    assert_eq!(tr.sms().await.len(), 1, "the SMS must not be sent twice");
}

#[tokio::test]
async fn an_email_refused_by_an_unreachable_relay_is_sent_alone_by_the_next_run() {
    let (db, c, t, tr) = setup().await;
    let p = seed::patient(
        &c,
        "Jonas Weber",
        Some("jonas.weber@example.de"),
        Some("+4915112345678"),
    )
    .await;
    Booking::new(t, p, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    // A port nobody listens on: bind one, learn it, close it.
    let closed = crate::support::free_port();
    let first = tr
        .apply(db.cmd())
        .env("SMTP_URL", format!("smtp://127.0.0.1:{closed}"))
        .args(["--now", NOW, "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(first.code, 1, "{}", first.stderr);
    assert_eq!(first.json()["stages"][0]["counters"]["sent_sms"], 1);

    let (code, counters, err) = stage(&db, &tr, &minutes_after(NOW, 5), &["reminder-24h"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(counters["sent_email"], 1, "{counters}");
    assert_eq!(counters["sent_sms"], 0, "{counters}");
    assert_eq!(tr.emails().len(), 1);
    assert_eq!(tr.sms().await.len(), 1);
}

#[tokio::test]
async fn a_delivery_that_panics_costs_no_other_patient_a_message_and_the_run_finishes() {
    let (db, c, t, tr) = setup().await;
    let bad = seed::patient(
        &c,
        "Eva\r\nBcc: someone@evil.example",
        Some("eva@example.de"),
        None,
    )
    .await;
    let bad_booking = Booking::new(t, bad, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    for i in 0..3 {
        let p = seed::patient(&c, "Jonas Weber", Some(&format!("p{i}@example.de")), None).await;
        Booking::new(t, p, at(NOW) + Duration::hours(24))
            .insert(&c)
            .await;
    }
    // A later stage of `followups`: an intro that ended 20 minutes ago.
    let later = seed::patient(&c, "Jonas Weber", Some("later@example.de"), None).await;
    Booking::new(t, later, at(NOW) - Duration::minutes(35))
        .intro()
        .insert(&c)
        .await;

    let out = tr
        .apply(db.cmd())
        .args(["--now", NOW, "--json", "followups"])
        .run()
        .await;
    let report = out.json();
    let to: Vec<String> = tr.emails().iter().map(|m| m.to[0].clone()).collect();
    for i in 0..3 {
        assert!(to.contains(&format!("p{i}@example.de")), "{to:?}");
    }
    assert!(
        to.contains(&"later@example.de".to_string()),
        "later stages ran"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM journey_deliveries WHERE status IN ('sending', 'in_doubt')")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM journey_runs WHERE finished_at IS NOT NULL")
            .await,
        1,
        "the run is recorded as finished"
    );
    // Whether the bad name is sanitised (no panic) or panics and is recorded, nobody else
    // pays for it and nothing is left unexplained.
    let (status, error): (String, Option<String>) = c
        .query_one(
            "SELECT status, last_error FROM journey_deliveries WHERE booking_id = $1",
            &[&bad_booking],
        )
        .await
        .unwrap()
        .pipe(|r| (r.get(0), r.get(1)));
    if status == "sent" {
        assert_eq!(out.code, 0, "{}", out.stderr);
    } else {
        assert_eq!(status, "failed");
        assert!(error.is_some_and(|e| e.contains("panic")));
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert_eq!(report["totals"]["errors"], 1, "{report}");
        assert_eq!(seed::events(&c, "error").await.len(), 1);
    }
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

#[tokio::test]
async fn five_runs_with_limit_2_over_three_due_bookings_reach_all_three() {
    let (db, c, t, tr) = setup().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let p = seed::patient(&c, "Jonas Weber", Some(&format!("p{i}@example.de")), None).await;
        ids.push(
            Booking::new(t, p, at(NOW) + Duration::hours(24) + Duration::minutes(i))
                .insert(&c)
                .await,
        );
    }
    for run in 0..5 {
        let (code, _, err) = stage(
            &db,
            &tr,
            &minutes_after(NOW, run * 5),
            &["reminder-24h", "--limit", "2"],
        )
        .await;
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(tr.emails().len(), 3);
    assert_eq!(
        db.count("SELECT count(*) FROM cal_bookings WHERE reminder_24h_sent_at IS NOT NULL")
            .await,
        3
    );
}

/// A patient with a cancelled booking 3 hours ago and a match with another therapist.
async fn cancelled_with_other_match(c: &tokio_postgres::Client, t: Uuid) -> Uuid {
    let p = seed::patient(c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    let other = seed::therapist(c, "other-therapist").await;
    seed::matched(c, p, t).await;
    seed::matched(c, p, other).await;
    Booking::new(t, p, at(NOW) + Duration::days(2))
        .cancelled(at(NOW) - Duration::hours(3))
        .insert(c)
        .await;
    p
}

#[tokio::test]
async fn an_established_patient_who_cancels_once_gets_no_recovery_email() {
    // Completed sessions with another therapist: COMPLETED, and an accepted one that ended.
    for status in [Some("COMPLETED"), Some("ACCEPTED"), None] {
        let (db, c, t, tr) = setup().await;
        let p = cancelled_with_other_match(&c, t).await;
        let elsewhere = seed::therapist(&c, "earlier-therapist").await;
        Booking::new(elsewhere, p, at(NOW) - Duration::days(30))
            .status(status)
            .insert(&c)
            .await;
        let (code, counters, err) = stage(&db, &tr, NOW, &["cancellation-recovery"]).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            counters["skipped_has_successful_booking"], 1,
            "{status:?}: {counters}"
        );
        assert!(tr.emails().is_empty(), "{status:?}");
    }
    // A cancelled or no-show earlier booking is no success: the recovery email goes out.
    let (db, c, t, tr) = setup().await;
    let p = cancelled_with_other_match(&c, t).await;
    Booking::new(t, p, at(NOW) - Duration::days(30))
        .status(Some("NO_SHOW_GUEST"))
        .insert(&c)
        .await;
    let (_, counters, _) = stage(&db, &tr, NOW, &["cancellation-recovery"]).await;
    assert_eq!(counters["sent_email"], 1, "{counters}");
}

#[tokio::test]
async fn a_dry_run_counts_no_sent_messages_and_lists_them_as_planned() {
    let (db, c, t, tr) = setup().await;
    let p = seed::patient(
        &c,
        "Jonas Weber",
        Some("jonas.weber@example.de"),
        Some("+4915112345678"),
    )
    .await;
    Booking::new(t, p, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    let out = tr
        .apply(db.cmd())
        .args(["--now", NOW, "--json", "reminder-24h", "--dry-run"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["stages"][0]["planned"].as_array().unwrap().len(), 2);
    assert_eq!(report["totals"]["sent_email"], 0, "{report}");
    assert_eq!(report["totals"]["sent_sms"], 0, "{report}");
}

#[tokio::test]
async fn a_booking_is_counted_under_its_skip_reason_once_in_the_run_that_decided_it() {
    let (db, c, t, tr) = setup().await;
    let unreachable = seed::patient(&c, "Jonas Weber", None, None).await;
    let b = Booking::new(t, unreachable, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    let (_, first, _) = stage(&db, &tr, NOW, &["reminder-24h"]).await;
    assert_eq!(first["skipped_no_contact"], 1, "{first}");
    let (_, second, _) = stage(&db, &tr, &minutes_after(NOW, 30), &["reminder-24h"]).await;
    assert_eq!(second["skipped_no_contact"], 0, "{second}");
    assert_eq!(second["processed"], 0, "{second}");
    let recorded = db
        .count(&format!(
            "SELECT count(*) FROM journey_deliveries WHERE booking_id = '{b}' AND status = 'skipped'"
        ))
        .await;
    assert_eq!(recorded, 1, "the decision is in the ledger");

    // No free slots is re-evaluated: a later run inside the window may still send.
    let p = seed::patient(&c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    Booking::new(t, p, at(NOW) - Duration::days(4))
        .insert(&c)
        .await;
    seed::slots(&c, t, 0, None, at(NOW)).await;
    let (_, first, _) = stage(&db, &tr, NOW, &["session-followup"]).await;
    assert_eq!(first["skipped_no_availability"], 1, "{first}");
    seed::slots(&c, t, 2, None, at(NOW)).await;
    let (_, second, _) = stage(&db, &tr, &minutes_after(NOW, 30), &["session-followup"]).await;
    assert_eq!(second["sent_email"], 1, "{second}");
}

#[tokio::test(flavor = "multi_thread")]
async fn skipped_already_sent_counts_a_booking_once_when_another_run_has_both_its_messages() {
    let (db, c, t, tr) = setup().await;
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
    // Another run is committing both messages of the booking right now: its rows are
    // inserted but not yet committed, so our run selects the booking and its claims wait.
    let other = db.client().await;
    other
        .batch_execute(&format!(
            "BEGIN;
             INSERT INTO journey_deliveries (booking_id, patient_id, stage, channel,
                                             recipient_role, status, sent_at)
             VALUES ('{b}', '{p}', 'reminder_24h', 'email', 'patient', 'sent', now()),
                    ('{b}', '{p}', 'reminder_24h', 'sms', 'patient', 'sent', now());"
        ))
        .await
        .unwrap();
    let mut cli = tr.apply(db.cmd());
    cli.args(["--now", NOW, "--json", "reminder-24h", "--no-lock"]);
    let child = cli.spawn();
    let mut polls = 0;
    while db
        .count(
            "SELECT count(*) FROM pg_stat_activity
              WHERE application_name LIKE 'journeyctl:%' AND wait_event_type = 'Lock'",
        )
        .await
        < 2
    {
        polls += 1;
        assert!(polls < 100_000, "the run's claims never waited");
        tokio::task::yield_now().await;
    }
    other.batch_execute("COMMIT").await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let counters = &report["stages"][0]["counters"];
    assert_eq!(counters["skipped_already_sent"], 1, "{counters}");
    assert_eq!(counters["sent_email"], 0, "{counters}");
    assert!(tr.emails().is_empty());
    assert!(tr.sms().await.is_empty());
}
