//! Quiet hours (issue 14): no SMS between SMS_QUIET_START and SMS_QUIET_END (default
//! 21:00–08:00, Europe/Berlin). A reminder SMS that falls inside them is held in the ledger and
//! sent when they end, past the stage's own window if need be, or skipped and counted when the
//! session would be too close by then. The email always goes at once.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::harness::{CliOutput, TestDb};
use crate::seed;
use crate::support::{berlin, db_and_transports, sms_forms};
use crate::transports::Transports;

async fn booking_with_phone(c: &tokio_postgres::Client, start: DateTime<Utc>) -> Uuid {
    let t = seed::therapist(c, "lena-brandt").await;
    let p = seed::patient(
        c,
        "Jonas Weber",
        Some("jonas@example.de"),
        Some("+4915112345678"),
    )
    .await;
    seed::Booking::new(t, p, start).insert(c).await
}

/// A fresh database (and its client), the transports, and [`booking_with_phone`] at `start`.
async fn booked_with_phone(
    start: DateTime<Utc>,
) -> (TestDb, tokio_postgres::Client, Transports, Uuid) {
    let (db, c, tr) = db_and_transports().await;
    let b = booking_with_phone(&c, start).await;
    (db, c, tr, b)
}

/// `stage --json` at `now`, with `env` added to the transports' settings.
async fn stage_at(
    db: &TestDb,
    tr: &Transports,
    now: DateTime<Utc>,
    stage: &str,
    env: &[(&str, &str)],
) -> CliOutput {
    let mut cli = tr.apply(db.cmd());
    for (k, v) in env {
        cli.env(k, v);
    }
    cli.args(["--now", &now.to_rfc3339(), "--json", stage])
        .run()
        .await
}

/// Runs a stage at `now`; returns its counters.
async fn run(db: &TestDb, tr: &Transports, now: DateTime<Utc>, stage: &str) -> serde_json::Value {
    let out = stage_at(db, tr, now, stage, &[]).await;
    assert_eq!(out.code, 0, "{stage} at {now}: {}", out.stderr);
    out.json()["stages"][0]["counters"].clone()
}

async fn sms_row(c: &tokio_postgres::Client, booking: Uuid) -> Option<(String, Option<String>)> {
    c.query_opt(
        "SELECT status, last_error FROM journey_deliveries WHERE booking_id = $1 AND channel = 'sms'",
        &[&booking],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1)))
}

#[tokio::test]
async fn a_24h_reminder_due_at_night_sends_the_email_at_once_and_the_sms_when_quiet_hours_end() {
    // Session at 06:30: its 24 h window opens at 05:30 the day before, inside quiet hours.
    let (db, c, tr, b) = booked_with_phone(berlin(2026, 3, 11, 6, 30)).await;
    let first = run(&db, &tr, berlin(2026, 3, 10, 5, 30), "reminder-24h").await;
    assert_eq!(first["sent_email"], 1, "{first}");
    assert_eq!(first["sent_sms"], 0, "{first}");
    assert_eq!(first["retry_scheduled"], 1, "{first}");
    assert_eq!(tr.emails().len(), 1);
    assert!(tr.sms().await.is_empty(), "no SMS at 05:30");
    let (status, why) = sms_row(&c, b).await.unwrap();
    assert_eq!(status, "retry");
    assert!(why.unwrap().contains("quiet hours"));
    // Later runs inside quiet hours do not even select it.
    for (h, m) in [(6, 0), (7, 30)] {
        let again = run(&db, &tr, berlin(2026, 3, 10, h, m), "reminder-24h").await;
        assert_eq!(again["processed"], 0, "{again}");
    }
    assert!(tr.sms().await.is_empty());
    // At 08:00 the session is 22.5 h away, outside the 23-25 h window: the SMS goes anyway.
    let morning = run(&db, &tr, berlin(2026, 3, 10, 8, 0), "reminder-24h").await;
    assert_eq!(morning["sent_sms"], 1, "{morning}");
    assert_eq!(morning["sent_email"], 0, "{morning}");
    assert_eq!(tr.sms().await.len(), 1);
    assert_eq!(sms_row(&c, b).await.unwrap().0, "sent");
    let sent_at: DateTime<Utc> = c
        .query_one(
            "SELECT sent_at FROM journey_deliveries WHERE booking_id = $1 AND channel = 'sms'",
            &[&b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sent_at, berlin(2026, 3, 10, 8, 0));
    let after = run(&db, &tr, berlin(2026, 3, 10, 8, 30), "reminder-24h").await;
    assert_eq!(after["processed"], 0, "{after}");
    assert_eq!(tr.emails().len(), 1);
    assert_eq!(tr.sms().await.len(), 1);
}

#[tokio::test]
async fn a_1h_reminder_for_a_session_at_half_past_eight_is_sent_at_eight() {
    let (db, _, tr, _) = booked_with_phone(berlin(2026, 3, 29, 8, 30)).await;
    let mut sms_at = Vec::new();
    // Every 5 minutes from 07:15 to 08:30, as the shipped schedule runs it (on the DST day).
    let mut t = berlin(2026, 3, 29, 7, 15);
    while t <= berlin(2026, 3, 29, 8, 30) {
        let before = tr.sms().await.len();
        run(&db, &tr, t, "reminder-1h").await;
        if tr.sms().await.len() > before {
            sms_at.push(t);
        }
        t += chrono::Duration::minutes(5);
    }
    assert_eq!(sms_at, vec![berlin(2026, 3, 29, 8, 0)]);
    assert_eq!(tr.emails().len(), 1, "the email went at 07:20");
    let form = sms_forms(&tr).await.into_iter().next().unwrap();
    // Sent at 08:00 for 08:30: valid until 08:25.
    assert_eq!(form.get("ValidityPeriod").map(String::as_str), Some("1500"));
}

#[tokio::test]
async fn an_sms_quiet_hours_would_make_useless_is_skipped_and_counted_and_the_email_still_goes() {
    // Session at 08:05: by the end of quiet hours it starts in 5 minutes.
    let (db, c, tr, b) = booked_with_phone(berlin(2026, 3, 10, 8, 5)).await;
    let counters = run(&db, &tr, berlin(2026, 3, 10, 6, 55), "reminder-1h").await;
    assert_eq!(counters["sent_email"], 1, "{counters}");
    assert_eq!(counters["skipped_quiet_hours"], 1, "{counters}");
    assert_eq!(counters["sent_sms"], 0, "{counters}");
    let (status, why) = sms_row(&c, b).await.unwrap();
    assert_eq!(status, "skipped");
    assert!(why.unwrap().contains("quiet hours"));
    let morning = run(&db, &tr, berlin(2026, 3, 10, 8, 0), "reminder-1h").await;
    assert_eq!(morning["processed"], 0, "{morning}");
    assert!(tr.sms().await.is_empty());
    // The skip is recorded: audit finds nothing unexplained.
    let audit = db
        .cmd()
        .args([
            "--now",
            &berlin(2026, 3, 10, 12, 0).to_rfc3339(),
            "--json",
            "audit",
            "--days",
            "1",
        ])
        .run()
        .await;
    assert_eq!(audit.json()["unexplained"], 0, "{}", audit.stdout);
}

#[tokio::test]
async fn quiet_hours_follow_sms_quiet_start_and_end() {
    let (db, _, tr, _) = booked_with_phone(berlin(2026, 3, 10, 14, 0)).await;
    // Quiet from noon to 13:30: at 12:55 the 1 h reminder's SMS waits until 13:30.
    let quiet = [("SMS_QUIET_START", "12:00"), ("SMS_QUIET_END", "13:30")];
    let out = stage_at(&db, &tr, berlin(2026, 3, 10, 12, 55), "reminder-1h", &quiet).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["stages"][0]["counters"]["retry_scheduled"], 1);
    assert!(tr.sms().await.is_empty());
    let bad = tr
        .apply(db.cmd())
        .env("SMS_QUIET_END", "8 Uhr")
        .args(["reminder-1h"])
        .run()
        .await;
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("SMS_QUIET_END"), "{}", bad.stderr);
}

#[tokio::test]
async fn a_held_sms_whose_morning_run_was_missed_expires_visibly_instead_of_arriving_too_late() {
    let (db, c, tr, b) = booked_with_phone(berlin(2026, 3, 10, 8, 30)).await;
    let held = run(&db, &tr, berlin(2026, 3, 10, 7, 20), "reminder-1h").await;
    assert_eq!(held["retry_scheduled"], 1, "{held}");
    // No run from 08:00 to 08:15; at 08:20 the session is 10 minutes away.
    let out = stage_at(&db, &tr, berlin(2026, 3, 10, 8, 20), "reminder-1h", &[]).await;
    assert_eq!(
        out.code, 1,
        "an expired delivery fails the run: {}",
        out.stderr
    );
    assert_eq!(out.json()["stages"][0]["counters"]["expired"], 1);
    assert_eq!(sms_row(&c, b).await.unwrap().0, "expired");
    assert!(tr.sms().await.is_empty());
}

#[tokio::test]
async fn a_held_sms_of_a_booking_cancelled_overnight_is_dropped_quietly_not_expired() {
    let (db, c, tr, b) = booked_with_phone(berlin(2026, 3, 10, 8, 30)).await;
    run(&db, &tr, berlin(2026, 3, 10, 7, 20), "reminder-1h").await;
    c.execute(
        "UPDATE cal_bookings SET status = 'CANCELLED', cancelled_at = $2 WHERE id = $1",
        &[&b, &berlin(2026, 3, 10, 7, 30)],
    )
    .await
    .unwrap();
    for (h, m) in [(7, 50), (8, 0), (8, 20)] {
        let counters = run(&db, &tr, berlin(2026, 3, 10, h, m), "reminder-1h").await;
        assert_eq!(counters["expired"], 0, "{counters}");
    }
    let (status, why) = sms_row(&c, b).await.unwrap();
    assert_eq!(status, "skipped");
    assert!(why.unwrap().contains("no longer active"));
    assert!(tr.sms().await.is_empty());
}
