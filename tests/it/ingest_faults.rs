//! Faults at the edges where messages leave and events arrive (issue 10): Twilio refusing our
//! credentials, failing with 5xx or hanging; webhook bodies that PostgreSQL rejects or whose
//! apply fails; `serve` stopped while confirmations wait on a stalled relay.

use chrono::Duration;
use wiremock::matchers::{method, path_regex, query_param};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::harness::TestDb;
use crate::seed::{self, at, Booking};
use crate::support::{self, cal_fixture as fixture};
use crate::transports::Transports;

const PHONE: &str = "+4915112345678";
const MESSAGES: &str = r"^/2010-04-01/Accounts/[^/]+/Messages\.json$";

/// A booking whose 24 h reminder is due at `now`, for a patient with email and phone.
async fn reminder_due(db: &TestDb) -> (chrono::DateTime<chrono::Utc>, uuid::Uuid) {
    let c = db.client().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(
        &c,
        "Jonas Weber",
        Some("jonas.weber@example.de"),
        Some(PHONE),
    )
    .await;
    let now = at("2026-03-09T15:00:00Z");
    let b = Booking::new(t, p, now + Duration::hours(24))
        .insert(&c)
        .await;
    (now, b)
}

async fn sms_row(db: &TestDb, booking: uuid::Uuid) -> (String, Option<String>, Option<String>) {
    let c = db.client().await;
    let r = c
        .query_one(
            "SELECT status, provider_message_id, last_error FROM journey_deliveries
             WHERE booking_id = $1 AND channel = 'sms'",
            &[&booking],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

async fn reminder_24h(
    db: &TestDb,
    tr: &Transports,
    now: chrono::DateTime<chrono::Utc>,
) -> crate::harness::CliOutput {
    let mut cli = tr.apply(db.cmd());
    cli.env("TWILIO_TIMEOUT", "1s")
        .args(["--now", &now.to_rfc3339(), "--json", "reminder-24h"]);
    cli.run().await
}

/// Twilio's 201 with a sid.
fn created() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(
        serde_json::json!({"sid": "SMfixed0000000000000000000000000", "status": "queued"}),
    )
}

/// Twilio's Messages list as it would look for `PHONE`.
fn message_list(messages: Vec<serde_json::Value>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "messages": messages,
        "next_page_uri": null,
        "page": 0,
        "page_size": 100,
    }))
}

/// Mounts: POST answers `post`; GET (the lookup, filtered by To) answers `list`.
async fn twilio(tr: &Transports, post: ResponseTemplate, list: ResponseTemplate) {
    tr.twilio.reset().await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES))
        .respond_with(post)
        .mount(&tr.twilio)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(MESSAGES))
        .and(query_param("To", PHONE))
        .respond_with(list)
        .mount(&tr.twilio)
        .await;
}

async fn posts(tr: &Transports) -> Vec<Request> {
    tr.twilio
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST")
        .collect()
}

#[tokio::test]
async fn twilio_refusing_the_credentials_keeps_the_sms_retryable_and_it_goes_out_once_fixed() {
    let db = TestDb::migrated().await;
    let tr = Transports::start().await;
    let (now, booking) = reminder_due(&db).await;
    twilio(
        &tr,
        ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "code": 20003, "message": "Authenticate", "status": 401
        })),
        message_list(vec![]),
    )
    .await;
    let out = reminder_24h(&db, &tr, now).await;
    assert_ne!(out.code, 0, "a refused channel is not a good run");
    let (status, _, error) = sms_row(&db, booking).await;
    assert_eq!(
        status, "retry",
        "wrong credentials are not the patient's fault"
    );
    assert!(
        error
            .as_deref()
            .unwrap_or_default()
            .contains("TWILIO_AUTH_TOKEN"),
        "{error:?}"
    );
    assert!(!out.stderr.contains(crate::transports::TWILIO_TOKEN));

    // The operator fixes the token: the next run sends the SMS (and only the SMS) once.
    twilio(&tr, created(), message_list(vec![])).await;
    let out = reminder_24h(&db, &tr, now + Duration::minutes(5)).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (status, sid, _) = sms_row(&db, booking).await;
    assert_eq!(status, "sent");
    assert!(sid.is_some());
    assert_eq!(posts(&tr).await.len(), 1);
    assert_eq!(
        tr.emails().len(),
        1,
        "the email went out once, in the first run"
    );
}

#[tokio::test]
async fn a_twilio_500_for_a_message_twilio_never_created_is_retried_not_in_doubt() {
    let db = TestDb::migrated().await;
    let tr = Transports::start().await;
    let (now, booking) = reminder_due(&db).await;
    // Twilio has messages to this number, but none created during this request.
    let old = serde_json::json!({
        "sid": "SMold00000000000000000000000000000",
        "to": PHONE,
        "body": "an older message",
        "date_created": "Mon, 02 Mar 2026 10:00:00 +0000",
    });
    twilio(
        &tr,
        ResponseTemplate::new(500).set_body_json(serde_json::json!({"message": "oops"})),
        message_list(vec![old]),
    )
    .await;
    let out = reminder_24h(&db, &tr, now).await;
    let (status, _, _) = sms_row(&db, booking).await;
    assert_eq!(status, "retry", "{}", out.stderr);
    assert_eq!(
        db.count("SELECT count(*) FROM journey_deliveries WHERE status = 'in_doubt'")
            .await,
        0
    );
}

/// Answers the create with 500, but records the message as created (Twilio queued it and then
/// failed to answer); the list then shows it.
struct CreatedThen500 {
    body: std::sync::Mutex<Option<String>>,
}

impl Respond for CreatedThen500 {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(&req.body)
                .into_owned()
                .collect();
        *self.body.lock().unwrap() = form.get("Body").cloned();
        ResponseTemplate::new(500).set_body_json(serde_json::json!({"message": "oops"}))
    }
}

struct ListOf(std::sync::Arc<CreatedThen500>);

impl Respond for ListOf {
    fn respond(&self, _req: &Request) -> ResponseTemplate {
        let body = self.0.body.lock().unwrap().clone();
        let messages = match body {
            Some(body) => vec![serde_json::json!({
                "sid": "SMqueued000000000000000000000000",
                "to": PHONE,
                "body": body,
                "status": "queued",
                "date_sent": null,
                "date_created": chrono::Utc::now().to_rfc2822(),
            })],
            None => vec![],
        };
        message_list(messages)
    }
}

struct Shared(std::sync::Arc<CreatedThen500>);

impl Respond for Shared {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.0.respond(req)
    }
}

#[tokio::test]
async fn a_twilio_500_for_a_message_twilio_did_create_is_sent_with_its_sid() {
    let db = TestDb::migrated().await;
    let tr = Transports::start().await;
    let (now, booking) = reminder_due(&db).await;
    let state = std::sync::Arc::new(CreatedThen500 {
        body: std::sync::Mutex::new(None),
    });
    tr.twilio.reset().await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES))
        .respond_with(Shared(state.clone()))
        .mount(&tr.twilio)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(MESSAGES))
        .and(query_param("To", PHONE))
        .respond_with(ListOf(state))
        .mount(&tr.twilio)
        .await;
    let out = reminder_24h(&db, &tr, now).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (status, sid, _) = sms_row(&db, booking).await;
    assert_eq!(status, "sent");
    assert_eq!(sid.as_deref(), Some("SMqueued000000000000000000000000"));
    assert_eq!(posts(&tr).await.len(), 1);
}

#[tokio::test]
async fn a_twilio_request_that_times_out_for_a_message_never_created_is_retried() {
    let db = TestDb::migrated().await;
    let tr = Transports::start().await;
    let (now, booking) = reminder_due(&db).await;
    // The create hangs far past TWILIO_TIMEOUT (1 s); the list answers at once.
    twilio(
        &tr,
        created().set_delay(std::time::Duration::from_secs(600)),
        message_list(vec![]),
    )
    .await;
    let out = reminder_24h(&db, &tr, now).await;
    let (status, _, error) = sms_row(&db, booking).await;
    assert_eq!(status, "retry", "{error:?} {}", out.stderr);
}

#[tokio::test]
async fn a_twilio_500_stays_in_doubt_when_the_lookup_fails_too() {
    let db = TestDb::migrated().await;
    let tr = Transports::start().await;
    let (now, booking) = reminder_due(&db).await;
    twilio(
        &tr,
        ResponseTemplate::new(500).set_body_json(serde_json::json!({"message": "oops"})),
        ResponseTemplate::new(503),
    )
    .await;
    reminder_24h(&db, &tr, now).await;
    let (status, _, _) = sms_row(&db, booking).await;
    assert_eq!(status, "in_doubt");
}

// ---- webhook ingestion ---------------------------------------------------------------------

const SECRET: &str = "whsec_journeyctl_test_0001";
/// Before every fixture's session.
const NOW: &str = "2026-03-02T09:12:05Z";

/// The patient, therapist and match the fixture bodies name.
async fn seed_marketplace(db: &TestDb) {
    support::seed_marketplace(db).await;
}

/// `journeyctl webhook` with `body`, signed.
async fn post_body(db: &TestDb, tr: &Transports, body: &[u8]) -> crate::harness::CliOutput {
    support::signed_webhook(tr.apply_email_only(db.cmd()), SECRET, body, NOW).await
}

async fn replay(db: &TestDb, tr: &Transports, receipt: &str) -> crate::harness::CliOutput {
    let mut cli = tr.apply_email_only(db.cmd());
    cli.args(["--now", NOW, "--json", "webhook", "--replay", receipt]);
    cli.run().await
}

#[tokio::test]
async fn a_nul_in_any_field_is_stripped_and_the_booking_is_stored() {
    let db = TestDb::migrated().await;
    seed_marketplace(&db).await;
    let tr = Transports::start().await;
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture("booking_created_intro.json")).unwrap();
    v["payload"]["attendees"][0]["name"] = "Jonas\u{0} Weber".into();
    v["payload"]["location"] = "integrations:\u{0}daily".into();
    v["payload"]["metadata"]["kh_source"] = "match\u{0}_page".into();
    let body = serde_json::to_vec(&v).unwrap();
    assert!(String::from_utf8_lossy(&body).contains("\\u0000"));

    let out = post_body(&db, &tr, &body).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["status"], 200);
    let row = db
        .client()
        .await
        .query_one(
            "SELECT attendee_name, location, metadata->>'kh_source' FROM cal_bookings
             WHERE cal_uid = 'Kx7pR2mWq9TzLc4VbN8sYd'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("Jonas Weber")
    );
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("integrations:daily")
    );
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("match_page")
    );
    assert_eq!(tr.emails().len(), 2, "both confirmations went out");
}

#[tokio::test]
async fn a_body_whose_apply_failed_keeps_its_receipt_and_is_replayed_once() {
    let db = TestDb::migrated().await;
    seed_marketplace(&db).await;
    let tr = Transports::start().await;
    let c = db.client().await;
    // Any failure inside the apply: here the database refuses every new booking.
    c.batch_execute(
        "CREATE FUNCTION refuse_booking() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'bookings are refused for this test'; END $$;
         CREATE TRIGGER refuse_booking BEFORE INSERT ON cal_bookings
           FOR EACH ROW EXECUTE FUNCTION refuse_booking();",
    )
    .await
    .unwrap();
    let body = fixture("booking_created_full.json");
    let out = post_body(&db, &tr, &body).await;
    assert_eq!(out.json()["status"], 500, "{}", out.stderr);
    assert_eq!(db.count("SELECT count(*) FROM cal_bookings").await, 0);
    let receipts = c
        .query(
            "SELECT id::text, outcome, body IS NOT NULL FROM cal_webhook_receipts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(receipts.len(), 1, "the body is kept for a replay");
    let receipt: String = receipts[0].get(0);
    assert_eq!(receipts[0].get::<_, String>(1), "error");
    assert!(receipts[0].get::<_, bool>(2));
    assert!(tr.emails().is_empty());

    c.batch_execute("DROP TRIGGER refuse_booking ON cal_bookings")
        .await
        .unwrap();
    // No signature, no secret: the body was verified when it arrived.
    let out = replay(&db, &tr, &receipt).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["outcome"], "applied");
    assert_eq!(db.count("SELECT count(*) FROM cal_bookings").await, 1);
    assert_eq!(
        tr.emails().len(),
        2,
        "confirmation and therapist notice, once"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM cal_webhook_receipts WHERE outcome = 'applied'")
            .await,
        1
    );

    let out = replay(&db, &tr, &receipt).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["outcome"], "duplicate");
    assert_eq!(tr.emails().len(), 2, "nothing sent twice");
    // The same body from Cal.com again is a duplicate too.
    let out = post_body(&db, &tr, &body).await;
    assert_eq!(out.json()["outcome"], "duplicate");
    assert_eq!(tr.emails().len(), 2);
}

#[tokio::test]
async fn replaying_an_unknown_receipt_exits_2() {
    let db = TestDb::migrated().await;
    let tr = Transports::start().await;
    let out = replay(&db, &tr, "00000000-0000-4000-8000-000000000000").await;
    assert_eq!(out.code, 2, "{}", out.stderr);
}

// ---- serve: draining on SIGTERM ------------------------------------------------------------

/// A BOOKING_CREATED for booking `i`: its own uid, therapist and patient (so each message has
/// its own recipient).
fn created_body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&support::numbered_booking("drain", i)).unwrap()
}

#[tokio::test]
async fn serve_drains_within_its_bound_on_sigterm_and_leaves_the_rest_to_confirmation_recovery() {
    const BOOKINGS: usize = 12;
    let db = TestDb::migrated().await;
    let tr = Transports::start().await;
    let c = db.client().await;
    support::seed_people(&c, BOOKINGS).await;
    // The relay takes every message body and never answers.
    tr.smtp.close_gate();
    let mut cli = tr.apply_email_only(db.cmd());
    cli.env("CAL_WEBHOOK_SECRET", SECRET).args(["--now", NOW]);
    let (mut child, base) = support::spawn_serve_with(cli, &["--drain-timeout", "1s"]).await;
    let http = reqwest::Client::new();
    let secret = journeyctl::secret::Secret::new(SECRET);
    for i in 0..BOOKINGS {
        let body = created_body(i);
        let r = http
            .post(format!("{base}/api/public/cal/webhook"))
            .header(
                "X-Cal-Signature-256",
                journeyctl::webhook::sign(&secret, &body),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Confirmations are stuck at the relay, more are queued behind them.
    tr.smtp.wait_held(2);
    support::signal(&child, "TERM", false);
    // Far above the 1 s drain bound, far below a send's own 60 s timeout.
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("serve did not exit within its drain bound")
        .unwrap();
    assert!(status.success(), "serve exits 0 after draining: {status:?}");
    assert_eq!(
        db.count("SELECT count(*) FROM cal_bookings").await,
        BOOKINGS as i64,
        "every answered booking is stored"
    );

    // The relay recovers; confirmation-recovery sends what serve left.
    tr.smtp.open_gate();
    let out = tr
        .apply_email_only(db.cmd())
        .args(["--now", "2026-03-02T09:40:00Z", "confirmation-recovery"])
        .run()
        .await;
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);

    let mails = tr.emails();
    let received = |to: &str| support::received(&mails, to);
    let rows = support::numbered_confirmations(&c, "drain").await;
    assert_eq!(
        rows.len(),
        2 * BOOKINGS,
        "both messages of every booking have a row"
    );
    for r in rows {
        let (uid, role, status) = (&r.uid, &r.role, &r.status);
        let to =
            r.to.clone()
                .unwrap_or_else(|| panic!("{uid}: {role:?} {status:?}"));
        let n = received(&to);
        assert!(n <= 1, "{to} got {n} messages");
        match status.as_deref() {
            Some("sent") => assert_eq!(n, 1, "{to}"),
            // Only a message whose body reached the relay may be in doubt.
            Some("sending" | "in_doubt") => assert_eq!(n, 1, "{to} is in doubt but was never sent"),
            other => panic!("{to}: {other:?} after confirmation-recovery"),
        }
    }
}
