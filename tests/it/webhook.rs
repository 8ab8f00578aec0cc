//! Cal.com webhooks through `journeyctl webhook` and `journeyctl serve`, with the signed
//! fixture bodies.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::harness::{Cli, TestDb};
use crate::support::{seed_marketplace, terminate, MATCH, PATIENT, THERAPIST};
use crate::transports::Transports;

const SECRET: &str = "whsec_journeyctl_test_0001";
/// Before every fixture's session.
const NOW: &str = "2026-03-02T09:12:05Z";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cal")
        .join(name)
}

fn signatures() -> HashMap<String, String> {
    std::fs::read_to_string(fixture("signatures.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(f, s)| (f.to_string(), s.trim().to_string()))
        .collect()
}

fn webhook(db: &TestDb, tr: &Transports, name: &str, signature: Option<&str>) -> Cli {
    let mut cli = tr.apply(db.cmd());
    cli.env("CAL_WEBHOOK_SECRET", SECRET)
        .args(["--now", NOW, "--json", "webhook", "--file"])
        .arg(fixture(name));
    if let Some(sig) = signature {
        cli.args(["--signature", sig]);
    }
    cli
}

async fn post(db: &TestDb, tr: &Transports, name: &str) -> serde_json::Value {
    let sig = signatures()[name].clone();
    let out = webhook(db, tr, name, Some(&sig)).run().await;
    assert_eq!(out.code, 0, "{name}: {}", out.stderr);
    out.json()
}

async fn booking(c: &tokio_postgres::Client, uid: &str) -> tokio_postgres::Row {
    c.query_one(
        "SELECT status, patient_id::text, therapist_id::text, booking_kind, match_id::text,
                rescheduled_to_uid, rescheduled_from_uid, cancelled_at IS NOT NULL,
                request_reschedule, is_test, client_confirmation_sent_at IS NOT NULL,
                therapist_notification_sent_at IS NOT NULL, video_url
         FROM cal_bookings WHERE cal_uid = $1",
        &[&uid],
    )
    .await
    .unwrap_or_else(|e| panic!("booking {uid}: {e}"))
}

#[tokio::test]
async fn a_new_intro_is_stored_resolved_and_confirmed_to_both_sides() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    let out = post(&db, &tr, "booking_created_intro.json").await;
    assert_eq!(out["status"], 200);
    assert_eq!(out["outcome"], "applied");

    let row = booking(&c, "Kx7pR2mWq9TzLc4VbN8sYd").await;
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("ACCEPTED"));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some(PATIENT));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some(THERAPIST));
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("intro"));
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some(MATCH));
    assert!(row.get::<_, bool>(10), "patient confirmation marked");
    assert!(row.get::<_, bool>(11), "therapist notice marked");

    let mails = tr.emails();
    assert_eq!(mails.len(), 2);
    let to: Vec<&str> = mails.iter().map(|m| m.to[0].as_str()).collect();
    assert!(to.contains(&"jonas.weber@example.de"));
    assert!(to.contains(&"lena.brandt@praxis.example"));
    for m in &mails {
        let raw = String::from_utf8_lossy(&m.raw);
        assert!(raw.contains("text/calendar"), "invite attached");
    }
    let received = crate::seed::events(&c, "cal_webhook_received").await;
    assert_eq!(received.len(), 1);
    let text = serde_json::to_string(&received).unwrap();
    assert!(
        !text.contains("jonas.weber@"),
        "no attendee email in events: {text}"
    );
}

#[tokio::test]
async fn a_changed_byte_or_a_missing_secret_is_refused_with_401_and_nothing_is_stored() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    let sig = signatures()["booking_created_full.json"].clone();

    let mut body = std::fs::read(fixture("booking_created_full.json")).unwrap();
    let i = body.iter().position(|&b| b == b'9').unwrap();
    body[i] = b'8';
    let dir = tempfile::tempdir().unwrap();
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, &body).unwrap();

    let mut cli = tr.apply(db.cmd());
    cli.env("CAL_WEBHOOK_SECRET", SECRET)
        .args(["--json", "webhook", "--signature", &sig, "--file"])
        .arg(&tampered);
    let out = cli.run().await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.json()["status"], 401);

    let out = webhook(
        &db,
        &tr,
        "booking_created_full.json",
        Some("no-secret-provided"),
    )
    .run()
    .await;
    assert_eq!(out.code, 1);
    assert_eq!(out.json()["status"], 401);
    let out = webhook(&db, &tr, "booking_created_full.json", None)
        .run()
        .await;
    assert_eq!(out.json()["status"], 401);

    for table in [
        "cal_bookings",
        "cal_webhook_receipts",
        "events",
        "journey_deliveries",
    ] {
        assert_eq!(
            db.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    drop(c);
    assert!(tr.emails().is_empty());
}

#[tokio::test]
async fn created_then_rescheduled_then_cancelled_keeps_every_known_value() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    post(&db, &tr, "booking_created_full.json").await;
    post(&db, &tr, "booking_rescheduled.json").await;
    post(&db, &tr, "booking_cancelled.json").await;

    let old = booking(&c, "Fs3nQ8vLx2WpHc7KdM5tRb").await;
    assert_eq!(
        old.get::<_, Option<String>>(0).as_deref(),
        Some("RESCHEDULED")
    );
    assert_eq!(
        old.get::<_, Option<String>>(5).as_deref(),
        Some("Rz9mC4wPq7XnLb2VkT6sHf")
    );

    let new = booking(&c, "Rz9mC4wPq7XnLb2VkT6sHf").await;
    assert_eq!(
        new.get::<_, Option<String>>(0).as_deref(),
        Some("CANCELLED")
    );
    assert_eq!(new.get::<_, Option<String>>(1).as_deref(), Some(PATIENT));
    assert_eq!(new.get::<_, Option<String>>(2).as_deref(), Some(THERAPIST));
    assert_eq!(
        new.get::<_, Option<String>>(3).as_deref(),
        Some("full_session")
    );
    assert_eq!(new.get::<_, Option<String>>(4).as_deref(), Some(MATCH));
    assert_eq!(
        new.get::<_, Option<String>>(6).as_deref(),
        Some("Fs3nQ8vLx2WpHc7KdM5tRb")
    );
    assert!(new.get::<_, bool>(7), "cancelled_at set");
    // Two confirmations for the first time, two for the new time, and (issue 9) the
    // cancellation notice that takes the patient's invite back.
    let mails = tr.emails();
    assert_eq!(mails.len(), 5);
    let notices: Vec<_> = mails
        .iter()
        .filter(|m| m.subject().starts_with("Termin abgesagt"))
        .collect();
    assert_eq!(notices.len(), 1);
    let (_, ics) = crate::content::invite(notices[0]).expect("the notice carries the .ics");
    assert!(ics.contains("METHOD:CANCEL"), "{ics}");
}

#[tokio::test]
async fn the_flat_meeting_ended_completes_the_intro_and_keeps_its_therapist() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    post(&db, &tr, "booking_created_intro.json").await;
    post(&db, &tr, "meeting_ended_flat.json").await;
    let row = booking(&c, "Kx7pR2mWq9TzLc4VbN8sYd").await;
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("COMPLETED")
    );
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some(THERAPIST));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some(PATIENT));

    post(&db, &tr, "booking_no_show_updated.json").await;
    let row = booking(&c, "Kx7pR2mWq9TzLc4VbN8sYd").await;
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("NO_SHOW_GUEST")
    );
}

#[tokio::test]
async fn a_cancellation_before_its_creation_ends_cancelled_and_confirms_nothing() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    post(&db, &tr, "booking_cancelled_request_reschedule.json").await;
    // The RESCHEDULED that created this uid arrives late.
    post(&db, &tr, "booking_rescheduled.json").await;
    let row = booking(&c, "Rz9mC4wPq7XnLb2VkT6sHf").await;
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("CANCELLED")
    );
    assert!(row.get::<_, bool>(8), "request_reschedule kept");
    assert!(
        tr.emails().is_empty(),
        "no confirmation for a cancelled booking"
    );
}

#[tokio::test]
async fn the_same_body_twice_has_one_effect_and_one_confirmation() {
    let db = TestDb::migrated().await;
    let _c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    post(&db, &tr, "booking_created_full.json").await;
    let second = post(&db, &tr, "booking_created_full.json").await;
    assert_eq!(second["outcome"], "duplicate");
    assert_eq!(tr.emails().len(), 2);
    assert_eq!(db.count("SELECT count(*) FROM cal_bookings").await, 1);
}

#[tokio::test]
async fn ping_and_unknown_triggers_are_acknowledged_and_store_no_booking() {
    let db = TestDb::migrated().await;
    let _c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    for f in ["ping.json", "unknown_trigger.json"] {
        let out = post(&db, &tr, f).await;
        assert_eq!(out["status"], 200);
        assert_eq!(out["outcome"], "acknowledged");
    }
    assert_eq!(db.count("SELECT count(*) FROM cal_bookings").await, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM cal_webhook_receipts").await,
        2
    );
}

#[tokio::test]
async fn a_confirmation_that_failed_at_smtp_is_sent_by_confirmation_recovery() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    tr.smtp_reply_451(true);
    let sig = signatures()["booking_created_full.json"].clone();
    let out = webhook(&db, &tr, "booking_created_full.json", Some(&sig))
        .run()
        .await;
    assert_eq!(
        out.code, 1,
        "the booking is stored but its confirmation failed: {}",
        out.stderr
    );
    assert_eq!(db.count("SELECT count(*) FROM cal_bookings").await, 1);
    assert!(tr.emails().is_empty());

    tr.smtp_reply_451(false);
    let out = tr
        .apply(db.cmd())
        .args([
            "--now",
            "2026-03-06T10:20:00Z",
            "--json",
            "confirmation-recovery",
        ])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["stages"][0]["counters"]["sent_email"], 2);
    assert_eq!(tr.emails().len(), 2);
    let row = booking(&c, "Fs3nQ8vLx2WpHc7KdM5tRb").await;
    assert!(row.get::<_, bool>(10) && row.get::<_, bool>(11));
}

#[tokio::test]
async fn serve_answers_on_http_with_the_right_status_codes() {
    let db = TestDb::migrated().await;
    let _c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    let port = crate::support::free_port();
    let mut cli = tr.apply(db.cmd());
    cli.env("CAL_WEBHOOK_SECRET", SECRET).args([
        "--now",
        NOW,
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    let child = cli.spawn();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    // The listener is up once /healthz answers.
    let mut tries = 0;
    loop {
        match http.get(format!("{base}/healthz")).send().await {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                break;
            }
            Err(_) => {
                tries += 1;
                assert!(tries < 5000, "serve never came up");
                tokio::task::yield_now().await;
            }
        }
    }
    let body = std::fs::read(fixture("booking_created_intro.json")).unwrap();
    let sig = signatures()["booking_created_intro.json"].clone();
    let url = format!("{base}/api/public/cal/webhook");
    let ok = http
        .post(&url)
        .header("X-Cal-Signature-256", &sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let unsigned = http
        .post(&url)
        .header("X-Cal-Signature-256", "no-secret-provided")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let invalid_sig =
        journeyctl::webhook::sign(&journeyctl::secret::Secret::new(SECRET), b"{not json");
    let invalid = http
        .post(&url)
        .header("X-Cal-Signature-256", invalid_sig)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let huge = http
        .post(&url)
        .header("X-Cal-Signature-256", &sig)
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);

    // SIGTERM: in-flight confirmations finish, then the process exits cleanly.
    terminate(child).await;
    assert_eq!(
        tr.emails().len(),
        2,
        "both confirmations went out before exit"
    );
    assert_eq!(db.count("SELECT count(*) FROM cal_bookings").await, 1);
}
