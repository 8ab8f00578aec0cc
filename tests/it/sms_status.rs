//! SMS delivery status (issue 14): every Twilio send asks for a status callback and expires
//! before the session; `serve` takes Twilio's signed callbacks and records the status on the
//! ledger row, monotonically; `status` and `audit` show what became of the SMS.
//!
//! Signatures are computed here from Twilio's documented algorithm (HMAC-SHA1 with the auth
//! token over the URL followed by the sorted parameters, name then value; base64), not with
//! the program's own code.

use base64::Engine;
use chrono::Duration;
use hmac::{Hmac, Mac};
use uuid::Uuid;

use crate::harness::TestDb;
use crate::seed::{self, at};
use crate::support::{db_and_transports, sms_forms, spawn_serve};
use crate::transports::{Transports, TWILIO_TOKEN};

const NOW: &str = "2026-03-10T12:00:00Z";
/// The public base Twilio reaches `serve` through (a TLS proxy in front of 127.0.0.1).
const PUBLIC: &str = "https://journey.praxis.example";

/// Twilio's signature of a request to `url` with these form parameters.
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `n` bookings with a phone whose 1 h reminder is due at NOW; returns their ids.
async fn due_for_1h_reminder(c: &tokio_postgres::Client, n: usize) -> Vec<Uuid> {
    let t = seed::therapist(c, "lena-brandt").await;
    let mut ids = Vec::new();
    for i in 0..n {
        let p = seed::patient(
            c,
            "Jonas Weber",
            Some(&format!("jonas{i}@example.de")),
            Some(&format!("+4915112345{i:03}")),
        )
        .await;
        let start = at(NOW) + Duration::minutes(60);
        ids.push(seed::Booking::new(t, p, start).insert(c).await);
    }
    ids
}

/// `reminder-1h` at NOW with `PUBLIC_CALLBACK_BASE=base`, which must succeed.
async fn remind_1h(db: &TestDb, tr: &Transports, base: &str) {
    let out = tr
        .apply(db.cmd())
        .env("PUBLIC_CALLBACK_BASE", base)
        .args(["--now", NOW, "reminder-1h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// A fresh database (and its client) and the transports, with `n` bookings
/// ([`due_for_1h_reminder`]) whose 1 h reminder went out with `PUBLIC_CALLBACK_BASE=base`.
async fn reminded(n: usize, base: &str) -> (TestDb, tokio_postgres::Client, Transports, Vec<Uuid>) {
    let (db, c, tr) = db_and_transports().await;
    let bookings = due_for_1h_reminder(&c, n).await;
    remind_1h(&db, &tr, base).await;
    (db, c, tr, bookings)
}

/// (delivery id, provider message id) of a booking's SMS.
async fn sms_row(c: &tokio_postgres::Client, booking: Uuid) -> (Uuid, String) {
    let r = c
        .query_one(
            "SELECT id, provider_message_id FROM journey_deliveries
             WHERE booking_id = $1 AND channel = 'sms' AND status = 'sent'",
            &[&booking],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test]
async fn every_twilio_sms_asks_for_a_status_callback_and_expires_five_minutes_before_the_session() {
    let (_db, c, tr, bookings) = reminded(1, &format!("{PUBLIC}/")).await;
    let booking = bookings[0];
    let forms = sms_forms(&tr).await;
    assert_eq!(forms.len(), 1);
    let (delivery, _) = sms_row(&c, booking).await;
    assert_eq!(
        forms[0].get("StatusCallback").map(String::as_str),
        Some(format!("{PUBLIC}/api/public/twilio/status?d={delivery}").as_str())
    );
    // The session starts in 60 minutes: 3600 s - 300 s.
    assert_eq!(
        forms[0].get("ValidityPeriod").map(String::as_str),
        Some("3300")
    );
}

#[tokio::test]
async fn a_24h_reminder_sms_is_valid_for_ten_hours_and_without_a_callback_base_asks_for_no_callback(
) {
    let (db, c, tr) = db_and_transports().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(&c, "Jonas Weber", None, Some("+4915112345678")).await;
    seed::Booking::new(t, p, at(NOW) + Duration::hours(24))
        .insert(&c)
        .await;
    let out = tr
        .apply(db.cmd())
        .args(["--public-callback-base=", "--now", NOW, "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let forms = sms_forms(&tr).await;
    assert_eq!(forms.len(), 1);
    assert_eq!(forms[0].get("StatusCallback"), None);
    assert_eq!(
        forms[0].get("ValidityPeriod").map(String::as_str),
        Some("36000")
    );
}

/// A running `serve` behind the public base, and an HTTP client.
struct Serve {
    _child: tokio::process::Child,
    local: String,
    http: reqwest::Client,
}

async fn serve(db: &TestDb, tr: &Transports) -> Serve {
    let mut cli = tr.apply(db.cmd());
    cli.env("CAL_WEBHOOK_SECRET", "whsec_test")
        .env("PUBLIC_CALLBACK_BASE", PUBLIC);
    let (child, local) = spawn_serve(cli).await;
    Serve {
        _child: child,
        local,
        http: reqwest::Client::new(),
    }
}

impl Serve {
    /// Posts a callback for `delivery` signed with `token` over `signed_url` (by default the
    /// public URL Twilio was given).
    async fn callback(
        &self,
        delivery: Uuid,
        params: &[(&str, &str)],
        token: Option<&str>,
        signed_url: Option<&str>,
    ) -> u16 {
        let query = format!("d={delivery}");
        let public = format!("{PUBLIC}/api/public/twilio/status?{query}");
        let mut req = self
            .http
            .post(format!("{}/api/public/twilio/status?{query}", self.local))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(params.iter())
                    .finish(),
            );
        if let Some(token) = token {
            req = req.header(
                "X-Twilio-Signature",
                twilio_signature(token, signed_url.unwrap_or(&public), params),
            );
        }
        req.send().await.unwrap().status().as_u16()
    }
}

/// Every column of every delivery row, to show that a refused callback wrote nothing.
async fn ledger_snapshot(c: &tokio_postgres::Client) -> String {
    c.query_one(
        "SELECT coalesce(string_agg(d::text, E'\\n' ORDER BY id), '') FROM journey_deliveries d",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn provider_status(c: &tokio_postgres::Client, id: Uuid) -> (Option<String>, Option<String>) {
    let r = c
        .query_one(
            "SELECT provider_status, provider_error_code FROM journey_deliveries WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test]
async fn a_callback_with_a_forged_or_missing_signature_gets_403_and_writes_nothing() {
    let (db, c, tr, bookings) = reminded(1, PUBLIC).await;
    let booking = bookings[0];
    let (delivery, sid) = sms_row(&c, booking).await;
    let s = serve(&db, &tr).await;
    let params = [
        ("MessageSid", sid.as_str()),
        ("MessageStatus", "delivered"),
        ("AccountSid", crate::transports::TWILIO_SID),
    ];
    let before = ledger_snapshot(&c).await;
    let events_before = db.count("SELECT count(*) FROM events").await;
    // Another account's token, the URL of the listener instead of the configured one,
    // another delivery's URL, no header at all.
    let other = Uuid::new_v4();
    let wrong_url = format!("{}/api/public/twilio/status?d={delivery}", s.local);
    let other_url = format!("{PUBLIC}/api/public/twilio/status?d={other}");
    assert_eq!(
        s.callback(delivery, &params, Some("not-our-token"), None)
            .await,
        403
    );
    assert_eq!(
        s.callback(delivery, &params, Some(TWILIO_TOKEN), Some(&wrong_url))
            .await,
        403
    );
    assert_eq!(
        s.callback(delivery, &params, Some(TWILIO_TOKEN), Some(&other_url))
            .await,
        403
    );
    assert_eq!(s.callback(delivery, &params, None, None).await, 403);
    assert_eq!(
        ledger_snapshot(&c).await,
        before,
        "a refused callback wrote"
    );
    assert_eq!(db.count("SELECT count(*) FROM events").await, events_before);
    // The genuine one is taken.
    assert_eq!(
        s.callback(delivery, &params, Some(TWILIO_TOKEN), None)
            .await,
        200
    );
    assert_eq!(
        provider_status(&c, delivery).await,
        (Some("delivered".into()), None)
    );
}

/// A fixed shuffle (no randomness in tests): a small linear congruential sequence.
fn shuffled<T>(mut v: Vec<T>, seed: u64) -> Vec<T> {
    let mut x = seed;
    for i in (1..v.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(i, (x >> 33) as usize % (i + 1));
    }
    v
}

#[tokio::test]
async fn shuffled_and_repeated_callbacks_end_on_the_final_status_and_status_and_audit_show_it() {
    let (db, c, tr, bookings) = reminded(4, PUBLIC).await;
    let mut rows = Vec::new();
    for b in &bookings {
        rows.push(sms_row(&c, *b).await);
    }
    let s = serve(&db, &tr).await;
    // Per delivery, the statuses Twilio reports (in its order), each sent twice.
    let stories: [&[(&str, Option<&str>)]; 3] = [
        &[("queued", None), ("sent", None), ("delivered", None)],
        &[
            ("queued", None),
            ("sent", None),
            ("undelivered", Some("30003")),
        ],
        &[("sent", None), ("failed", Some("30006"))],
    ];
    let mut calls = Vec::new();
    for (i, story) in stories.iter().enumerate() {
        for &(status, code) in story.iter() {
            for _ in 0..2 {
                calls.push((i, status, code));
            }
        }
    }
    // Put final statuses first for at least one delivery: the worst order there is.
    let mut order = shuffled(calls, 14);
    order.sort_by_key(|(i, status, _)| (*i != 2) || !matches!(*status, "failed"));
    for (i, status, code) in order {
        let (id, sid) = &rows[i];
        let mut params = vec![("MessageSid", sid.as_str()), ("MessageStatus", status)];
        if let Some(code) = code {
            params.push(("ErrorCode", code));
        }
        assert_eq!(
            s.callback(*id, &params, Some(TWILIO_TOKEN), None).await,
            200,
            "{status} for delivery {i}"
        );
    }
    assert_eq!(
        provider_status(&c, rows[0].0).await,
        (Some("delivered".into()), None)
    );
    assert_eq!(
        provider_status(&c, rows[1].0).await,
        (Some("undelivered".into()), Some("30003".into()))
    );
    assert_eq!(
        provider_status(&c, rows[2].0).await,
        (Some("failed".into()), Some("30006".into()))
    );
    // A late "delivered" never overrides a final status.
    let late = [
        ("MessageSid", rows[1].1.as_str()),
        ("MessageStatus", "delivered"),
    ];
    assert_eq!(
        s.callback(rows[1].0, &late, Some(TWILIO_TOKEN), None).await,
        200
    );
    assert_eq!(
        provider_status(&c, rows[1].0).await.0.as_deref(),
        Some("undelivered")
    );
    // The fourth SMS never got a callback.
    assert_eq!(provider_status(&c, rows[3].0).await, (None, None));

    // Two hours later: per stage, 1 delivered, 2 undelivered, 1 unconfirmed after an hour.
    let later = "2026-03-10T14:00:00Z";
    let status = db
        .cmd()
        .args(["--now", later, "--json", "status"])
        .run()
        .await
        .json();
    let fates = status["sms_delivery"].as_array().unwrap();
    let reminder = fates
        .iter()
        .find(|f| f["stage"] == "reminder_1h")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(reminder["delivered"], 1, "{reminder}");
    assert_eq!(reminder["undelivered"], 2, "{reminder}");
    assert_eq!(reminder["unconfirmed"], 1, "{reminder}");
    let text = db.cmd().args(["--now", later, "status"]).run().await;
    assert!(text.stdout.contains("sms delivery"), "{}", text.stdout);

    let audit = db
        .cmd()
        .args(["--now", later, "--json", "audit", "--days", "1"])
        .run()
        .await;
    let list = audit.json()["undelivered_sms"].as_array().unwrap().clone();
    let mut codes: Vec<(String, String)> = list
        .iter()
        .map(|u| {
            (
                u["provider_status"].as_str().unwrap().to_string(),
                u["error_code"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        vec![
            ("failed".to_string(), "30006".to_string()),
            ("undelivered".to_string(), "30003".to_string())
        ]
    );
    let text = db
        .cmd()
        .args(["--now", later, "audit", "--days", "1"])
        .run()
        .await;
    assert!(
        text.stdout.contains("undelivered") && text.stdout.contains("error 30003"),
        "{}",
        text.stdout
    );
    // No patient number in the operator's output.
    assert!(!text.stdout.contains("12345001"), "{}", text.stdout);
}
