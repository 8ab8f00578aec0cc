//! What operators are told (issue: "Operators are told the truth"): `status` raises only real
//! silence, `audit` shows every channel that did not go out, and the command line behaves in
//! a pipe.

use chrono::Duration;

use crate::harness::{TestDb, BIN};
use crate::ops::has_flag;
use crate::seed::{self, at, Booking};
use crate::transports::Transports;

const NOW: &str = "2026-03-09T15:00:00Z";

#[tokio::test]
async fn status_raises_no_silence_alarm_when_the_due_bookings_were_test_bookings_or_skipped() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas@example.de"), None).await;
    let no_contact = seed::patient(&c, "Mia Kurz", None, None).await;
    // In the 24 h reminder window for all three runs: a test booking and a patient that
    // cannot be reached. Neither should have produced an email.
    let mut test = Booking::new(t, p, at(NOW) + Duration::hours(24));
    test.is_test = true;
    test.insert(&c).await;
    Booking::new(t, no_contact, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    for minute in [0, 30, 60] {
        let now = at(NOW) + Duration::minutes(minute);
        let out = tr
            .apply(db.cmd())
            .args(["--now", &now.to_rfc3339(), "-q", "reminder-24h"])
            .run()
            .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let out = db
        .cmd()
        .args(["--now", "2026-03-09T16:01:00Z", "--json", "status"])
        .run()
        .await;
    let report = out.json();
    assert!(
        !has_flag(&report, "no email sent"),
        "a false silence alarm: {report:#}"
    );
    assert!(tr.emails().is_empty());
}

#[tokio::test]
async fn audit_shows_a_failed_email_even_when_the_sms_of_the_same_stage_went_out() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(
        &c,
        "Jonas Weber",
        Some("jonas@example.de"),
        Some("+4915112345678"),
    )
    .await;
    // A session that took place yesterday: its 24 h reminder went out by SMS, the email
    // failed for good. The booking's stage column is set by the SMS.
    let b = Booking::new(t, p, at(NOW) - Duration::hours(20))
        .insert(&c)
        .await;
    c.execute(
        "UPDATE cal_bookings SET reminder_24h_sent_at = $2 WHERE id = $1",
        &[&b, &(at(NOW) - Duration::hours(44))],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO journey_deliveries (booking_id, stage, channel, recipient_role, status, last_error, sent_at)
         VALUES ($1, 'reminder_24h', 'sms', 'patient', 'sent', NULL, $2),
                ($1, 'reminder_24h', 'email', 'patient', 'failed', 'RCPT TO: 550 mailbox unavailable', NULL)",
        &[&b, &(at(NOW) - Duration::hours(44))],
    )
    .await
    .unwrap();
    let out = db
        .cmd()
        .args(["--now", NOW, "--json", "audit", "--days", "3"])
        .run()
        .await;
    let report = out.json();
    let misses = report["misses"].as_array().unwrap();
    let email = misses.iter().find(|m| {
        m["booking_id"] == serde_json::json!(b)
            && m["stage"] == "reminder_24h"
            && m["outcome"] == "failed"
    });
    let email = email.unwrap_or_else(|| panic!("the failed email is not listed: {report:#}"));
    assert_eq!(email["channel"], "email", "{report:#}");
    assert!(email["detail"].as_str().unwrap().contains("550"));
    // The SMS that went out is not a miss.
    assert!(
        !misses
            .iter()
            .any(|m| m["booking_id"] == serde_json::json!(b) && m["channel"] == "sms"),
        "{report:#}"
    );
}

#[tokio::test]
async fn closing_stdout_early_exits_quietly_without_a_panic() {
    let db = TestDb::migrated().await;
    // The reader has gone before the first line is written, like `status | head -0`, so every
    // write meets a closed pipe.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    for args in [
        vec!["status"],
        vec!["--json", "status"],
        vec!["audit"],
        vec!["migrate"],
    ] {
        let out = std::process::Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .args(&args)
            .stdout(writer.try_clone().unwrap())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "{args:?} panicked on a closed stdout: {stderr}"
        );
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
        assert!(out.status.code().is_some(), "{args:?} died by a signal");
    }
}
