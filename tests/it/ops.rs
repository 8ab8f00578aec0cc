//! What an operator runs: status, audit, resolve, and the command line itself.

use chrono::Duration;

use crate::harness::{Cli, TestDb};
use crate::seed::{self, at, Booking};
use crate::support;
use crate::transports::Transports;

const NOW: &str = "2026-03-09T15:00:00Z";

async fn status(db: &TestDb, now: &str) -> (i32, serde_json::Value) {
    let out = db
        .cmd()
        .args(["--now", now, "--json", "status"])
        .run()
        .await;
    (out.code, out.json())
}

pub fn has_flag(report: &serde_json::Value, needle: &str) -> bool {
    report["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["message"].as_str().unwrap_or("").contains(needle))
}

/// Every stage ran a moment ago, with nothing due.
async fn healthy_runs(db: &TestDb, tr: &Transports, now: &str) {
    let out = tr
        .apply(db.cmd())
        .args(["--now", now, "-q", "followups"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[tokio::test]
async fn status_is_ok_after_clean_runs_and_critical_when_a_stage_stops_running() {
    let db = TestDb::migrated().await;
    let tr = Transports::start().await;
    healthy_runs(&db, &tr, NOW).await;
    let (code, report) = status(&db, NOW).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["status"], "OK");

    // An hour later nothing has run: every stage is overdue.
    let (code, report) = status(&db, "2026-03-09T16:00:00Z").await;
    assert_eq!(code, 2);
    assert!(has_flag(&report, "no completed run"), "{report:#}");
}

#[tokio::test]
async fn status_flags_errors_missing_patients_silence_and_doubt() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas@example.de"), None).await;
    // Three bookings without a patient row: over 20 % of processed.
    for _ in 0..3 {
        let mut b = Booking::new(t, p, at(NOW) + Duration::hours(24));
        b.patient = None;
        b.insert(&c).await;
    }
    let b = Booking::new(t, p, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    c.execute(
        "INSERT INTO journey_deliveries (booking_id, stage, channel, recipient_role, status)
         VALUES ($1, 'reminder_1h', 'email', 'patient', 'in_doubt')",
        &[&b],
    )
    .await
    .unwrap();
    // A permanent refusal is an error (a transient one would only be a retry).
    tr.smtp.reply_550(true);
    for minute in [0, 5, 10] {
        let now = at(NOW) + Duration::minutes(minute);
        tr.apply(db.cmd())
            .args(["--now", &now.to_rfc3339(), "-q", "followups"])
            .run()
            .await;
    }
    let (code, report) = status(&db, "2026-03-09T15:11:00Z").await;
    assert_eq!(code, 2, "{report:#}");
    assert!(has_flag(&report, "error(s) counted"), "{report:#}");
    assert!(has_flag(&report, "had no patient row"), "{report:#}");
    assert!(
        has_flag(&report, "no email sent over the last 3 runs"),
        "{report:#}"
    );
    assert!(has_flag(&report, "in doubt"), "{report:#}");
    assert_eq!(report["in_doubt"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn audit_lists_a_provoked_miss_with_its_reason() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas@example.de"), None).await;
    // A session that took place yesterday: no reminder ever went out (no run saw it).
    let missed = Booking::new(t, p, at(NOW) - Duration::hours(20))
        .insert(&c)
        .await;
    // One whose email failed permanently: listed with the reason, not as a silent miss.
    let failed = Booking::new(t, p, at(NOW) - Duration::hours(30))
        .insert(&c)
        .await;
    c.execute(
        "INSERT INTO journey_deliveries (booking_id, stage, channel, recipient_role, status, last_error)
         VALUES ($1, 'reminder_24h', 'email', 'patient', 'failed', 'RCPT TO: 550 mailbox unavailable')",
        &[&failed],
    )
    .await
    .unwrap();
    let out = db
        .cmd()
        .args(["--now", NOW, "--json", "audit", "--days", "3"])
        .run()
        .await;
    assert_eq!(out.code, 1, "an unexplained miss: {}", out.stderr);
    let report = out.json();
    let misses = report["misses"].as_array().unwrap();
    let of = |id: uuid::Uuid, stage: &str| {
        misses
            .iter()
            .find(|m| m["booking_id"] == id.to_string() && m["stage"] == stage)
            .cloned()
    };
    assert_eq!(of(missed, "reminder_24h").unwrap()["outcome"], "missed");
    let f = of(failed, "reminder_24h").unwrap();
    assert_eq!(f["outcome"], "failed");
    assert!(f["detail"].as_str().unwrap().contains("550"));
}

#[tokio::test]
async fn resolve_moves_an_in_doubt_delivery_as_asked() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas@example.de"), None).await;
    let b = Booking::new(t, p, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    let id: uuid::Uuid = c
        .query_one(
            "INSERT INTO journey_deliveries (booking_id, stage, channel, recipient_role, status)
             VALUES ($1, 'reminder_24h', 'email', 'patient', 'in_doubt') RETURNING id",
            &[&b],
        )
        .await
        .unwrap()
        .get(0);
    let out = db
        .cmd()
        .args(["--now", NOW, "resolve", &id.to_string(), "--as", "sent"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let row = c
        .query_one(
            "SELECT d.status, b.reminder_24h_sent_at IS NOT NULL FROM journey_deliveries d
             JOIN cal_bookings b ON b.id = d.booking_id WHERE d.id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "sent");
    assert!(row.get::<_, bool>(1), "the booking is marked");

    // Not in doubt any more: nothing changes, exit 1.
    let again = db
        .cmd()
        .args(["resolve", &id.to_string(), "--as", "retry"])
        .run()
        .await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("not in_doubt"), "{}", again.stderr);

    // --as retry: the next run inside the window sends it.
    c.execute(
        "UPDATE journey_deliveries SET status = 'in_doubt' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE cal_bookings SET reminder_24h_sent_at = NULL WHERE id = $1",
        &[&b],
    )
    .await
    .unwrap();
    let out = db
        .cmd()
        .args(["resolve", &id.to_string(), "--as", "retry"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tr = Transports::start().await;
    let run = tr
        .apply_email_only(db.cmd())
        .args(["--now", NOW, "reminder-24h"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(tr.emails().len(), 1);
}

#[tokio::test]
async fn help_reads_well_and_never_shows_secrets() {
    let mut cli = Cli::new();
    cli.env("DATABASE_URL", "postgres://app:db-pass-123@db/x")
        .env("SMTP_URL", "smtps://u:smtp-pass-123@smtp.example:465")
        .env("TWILIO_AUTH_TOKEN", "twilio-token-123")
        .env("CAL_WEBHOOK_SECRET", "whsec_123")
        .arg("--help");
    let out = cli.run().await;
    assert_eq!(out.code, 0);
    for secret in [
        "db-pass-123",
        "smtp-pass-123",
        "twilio-token-123",
        "whsec_123",
    ] {
        assert!(!out.stdout.contains(secret), "{secret} in --help");
    }
    for command in [
        "migrate",
        "reminder-24h",
        "followups",
        "serve",
        "status",
        "demo",
    ] {
        assert!(
            out.stdout.contains(command),
            "{command} missing from --help"
        );
    }
    let sub = Cli::new().args(["reminder-24h", "--help"]).run().await;
    assert!(sub.stdout.contains("--dry-run") && sub.stdout.contains("--window-start"));
}

#[tokio::test]
async fn bad_input_names_the_problem_and_exits_2() {
    let db = TestDb::migrated().await;
    let out = db
        .cmd()
        .args(["--now", "yesterday", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--now"), "{}", out.stderr);
    let out = db
        .cmd()
        .env("EMAIL_OUTBOX_DIR", "/tmp")
        .args(["reminder-1h", "--window-start", "soon"])
        .run()
        .await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--window-start"), "{}", out.stderr);
    let out = db
        .cmd()
        .env("JOURNEY_TIMEZONE", "Mars/Base")
        .arg("status")
        .run()
        .await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("JOURNEY_TIMEZONE"), "{}", out.stderr);
}

#[tokio::test]
async fn preview_writes_every_message_and_an_index_linking_them() {
    let dir = support::preview().await;
    let index = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    for kind in journeyctl::domain::MessageKind::ALL {
        assert!(
            index.contains(kind.template_name()),
            "{} missing from the index",
            kind.template_name()
        );
    }
    let mut linked = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name != "index.html" {
            assert!(
                index.contains(&name),
                "{name} is not linked from index.html"
            );
            linked += 1;
        }
    }
    assert!(linked >= 30, "only {linked} files");
    let email = std::fs::read_to_string(dir.path().join("reminder_24h-full_session.html")).unwrap();
    assert!(
        email.contains("Erinnerung") || email.contains("erinnern"),
        "{email}"
    );
}

/// The DOM after headless Chromium (Debian's `chromium`) rendered a local page.
async fn rendered_dom(page: &std::path::Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .await
        .expect("chromium is installed (.ci/test installs it: apt-get install -y chromium)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_preview_shows_its_index_and_an_email_in_a_browser() {
    let dir = support::preview().await;
    let index = rendered_dom(&dir.path().join("index.html")).await;
    assert!(
        index.contains("Erinnerung: Ihr Termin morgen"),
        "index lacks the 24 h subject"
    );
    assert!(
        index.contains("Gleich geht's los!"),
        "index lacks the 1 h subject"
    );
    let email = rendered_dom(&dir.path().join("reminder_24h-full_session.html")).await;
    assert!(
        email.contains("Dienstag, 3. März 2026, 14:00 Uhr"),
        "{email}"
    );
    assert!(email.contains("Guten Tag Jonas Weber"), "{email}");
}

/// `audit` judges each stage's window where `Stage::default_window` puts it: a booking whose
/// window closed a minute ago is listed, one whose window closes in a minute is not (yet),
/// and a booking made after its window opened was never due.
#[tokio::test]
async fn audit_lists_a_booking_once_its_stage_window_has_closed_and_not_before() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas@example.de"), None).await;
    let now = at(NOW);
    let (m, h) = (Duration::minutes(1), Duration::hours(1));
    let full = |start| Booking::new(t, p, start);
    let intro = |end: chrono::DateTime<chrono::Utc>| {
        Booking::new(t, p, end - Duration::minutes(15)).intro()
    };
    let cancelled = |at| Booking::new(t, p, now + Duration::days(2)).cancelled(at);
    let unconfirmed = |start, booked_before| {
        Booking::new(t, p, start).unconfirmed(start - Duration::minutes(booked_before))
    };
    let session_end = now - Duration::days(5);
    // (stage, its window closed a minute ago, it closes in a minute)
    let cases = [
        (
            "reminder_24h",
            full(now + h * 23 - m),
            full(now + h * 23 + m),
        ),
        ("reminder_1h", full(now + m * 49), full(now + m * 51)),
        ("intro_followup", intro(now - m * 31), intro(now - m * 29)),
        (
            "session_followup",
            full(session_end - m * 51),
            full(session_end - m * 49),
        ),
        (
            "cancellation_recovery",
            cancelled(now - h * 4 - m),
            cancelled(now - h * 4 + m),
        ),
        (
            "confirmation_recovery",
            unconfirmed(now - m, 11),
            unconfirmed(now + m, 11),
        ),
    ];
    let mut ids = Vec::new();
    for (stage, closed, open) in &cases {
        ids.push((*stage, closed.insert(&c).await, open.insert(&c).await));
    }
    // Booked 9 minutes before the session: confirmation recovery never had it in its window.
    let late = unconfirmed(now - m, 9).insert(&c).await;
    let out = db
        .cmd()
        .args(["--now", NOW, "--json", "audit", "--days", "3"])
        .run()
        .await;
    let report = out.json();
    let misses = report["misses"].as_array().unwrap();
    let listed = |id: uuid::Uuid, stage: &str| {
        misses
            .iter()
            .any(|m| m["booking_id"] == id.to_string() && m["stage"] == stage)
    };
    for (stage, closed, open) in ids {
        assert!(listed(closed, stage), "{stage}: window closed, not listed");
        assert!(!listed(open, stage), "{stage}: window still open, listed");
    }
    assert!(!listed(late, "confirmation_recovery"));
}
