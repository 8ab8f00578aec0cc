//! `journeyctl reconcile` (issue 13): bookings, cancellations and reschedules whose webhook
//! never arrived are read from a Cal.com API stand-in (wiremock, serving the documented v2
//! shape from `tests/fixtures/calapi/`) and applied through the webhook's code, with real
//! PostgreSQL, SMTP and the compiled binary. No test sleeps.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::harness::{Cli, CliOutput, TestDb};
use crate::seed::at;
use crate::support::{self, cal_fixture, seed_marketplace, signed_webhook};
use crate::transports::Transports;

const KEY: &str = "cal_live_reconcile_test_key_0001_never_print";
const SECRET: &str = "whsec_journeyctl_test_0001";

fn api_fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/calapi/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn api_json(name: &str) -> Value {
    serde_json::from_slice(&api_fixture(name)).unwrap()
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One request the stand-in received.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    path: String,
    query: HashMap<String, String>,
    version: Option<String>,
    auth: Option<String>,
}

#[derive(Default)]
struct State {
    /// The bookings Cal.com holds, as API objects.
    bookings: Vec<Value>,
    /// Answers given in order before the bookings are paged (recorded pages, faults).
    script: VecDeque<ResponseTemplate>,
    seen: Vec<Seen>,
}

/// Cal.com's API v2 as far as reconcile uses it: pages `bookings` as the API does (filter,
/// sort, skip/take, the full pagination object), unless a scripted answer comes first.
#[derive(Clone, Default)]
struct CalApi(Arc<Mutex<State>>);

impl CalApi {
    fn with(bookings: Vec<Value>) -> CalApi {
        let api = CalApi::default();
        api.0.lock().unwrap().bookings = bookings;
        api
    }
    fn script(&self, answers: Vec<ResponseTemplate>) {
        self.0.lock().unwrap().script.extend(answers);
    }
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().seen.clone()
    }
    async fn serve(&self) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(self.clone())
            .mount(&server)
            .await;
        server
    }
}

impl Respond for CalApi {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut s = self.0.lock().unwrap();
        let header = |n: &str| {
            req.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let query: HashMap<String, String> = req.url.query_pairs().into_owned().collect();
        s.seen.push(Seen {
            at: Instant::now(),
            path: req.url.path().to_string(),
            query: query.clone(),
            version: header("cal-api-version"),
            auth: header("authorization"),
        });
        if let Some(answer) = s.script.pop_front() {
            return answer;
        }
        if header("cal-api-version").as_deref() != Some("2024-08-13") {
            return ResponseTemplate::new(200)
                .set_body_bytes(api_fixture("old_shape_2024_04_15.json"));
        }
        ResponseTemplate::new(200).set_body_json(page(&s.bookings, &query))
    }
}

fn page(bookings: &[Value], q: &HashMap<String, String>) -> Value {
    let (field, since) = match (q.get("afterCreatedAt"), q.get("afterUpdatedAt")) {
        (Some(s), _) => ("createdAt", Some(at(s))),
        (None, Some(s)) => ("updatedAt", Some(at(s))),
        _ => ("createdAt", None),
    };
    let mut items: Vec<&Value> = bookings
        .iter()
        .filter(|b| q.get("bookingUid").is_none_or(|u| b["uid"] == json!(u)))
        .filter(|b| since.is_none_or(|s| b[field].as_str().is_some_and(|t| at(t) >= s)))
        .collect();
    items.sort_by_key(|b| b[field].as_str().map(at));
    let ascending = q
        .get("sortCreated")
        .or(q.get("sortUpdatedAt"))
        .map(String::as_str)
        == Some("asc");
    if !ascending {
        items.reverse();
    }
    let take: usize = q.get("take").map_or(100, |t| t.parse().unwrap());
    let skip: usize = q.get("skip").map_or(0, |t| t.parse().unwrap());
    let total = items.len();
    let data: Vec<Value> = items.into_iter().skip(skip).take(take).cloned().collect();
    let n = data.len();
    json!({"status": "success", "data": data, "pagination": {
        "totalItems": total, "remainingItems": total.saturating_sub(skip + n),
        "returnedItems": n, "itemsPerPage": take, "currentPage": skip / take + 1,
        "totalPages": total.div_ceil(take), "hasNextPage": skip + n < total,
        "hasPreviousPage": skip > 0}})
}

/// A walk-in booking (no kh_* metadata) of the intro fixture's shape.
fn walk_in(
    uid: &str,
    status: &str,
    start: DateTime<Utc>,
    created: DateTime<Utc>,
    updated: Option<DateTime<Utc>>,
    n: usize,
) -> Value {
    let mut b = api_json("booking_intro_accepted.json");
    let email = format!("patient{n}@example.de");
    b["uid"] = json!(uid);
    b["status"] = json!(status);
    b["start"] = json!(iso(start));
    b["end"] = json!(iso(start + chrono::Duration::minutes(15)));
    b["createdAt"] = json!(iso(created));
    b["updatedAt"] = json!(updated.map(iso));
    b["metadata"] = json!({"videoCallUrl": format!("https://app.cal.com/video/{uid}")});
    b["location"] = json!(format!("https://app.cal.com/video/{uid}"));
    b["meetingUrl"] = b["location"].clone();
    b["attendees"] = json!([{"name": format!("Person {n}"), "email": email,
        "displayEmail": email, "timeZone": "Europe/Berlin", "absent": false,
        "phoneNumber": format!("+49151100000{n:02}")}]);
    b
}

/// The same booking as the webhook Cal.com would have POSTed when it was created.
fn created_webhook(b: &Value) -> Vec<u8> {
    let mut w: Value = serde_json::from_slice(&cal_fixture("booking_created_intro.json")).unwrap();
    let p = &mut w["payload"];
    p["uid"] = b["uid"].clone();
    p["startTime"] = b["start"].clone();
    p["endTime"] = b["end"].clone();
    p["attendees"][0]["email"] = b["attendees"][0]["email"].clone();
    p["attendees"][0]["name"] = b["attendees"][0]["name"].clone();
    p["attendees"][0]["phoneNumber"] = b["attendees"][0]["phoneNumber"].clone();
    p["metadata"] = b["metadata"].clone();
    w["createdAt"] = b["createdAt"].clone();
    serde_json::to_vec(&w).unwrap()
}

/// A migrated database with the marketplace seeded (and its client), and the transports.
async fn marketplace() -> (TestDb, tokio_postgres::Client, Transports) {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    (db, c, tr)
}

/// The stand-in holding `bookings`, and the server answering with it.
async fn serve_api(bookings: Vec<Value>) -> (CalApi, MockServer) {
    let cal = CalApi::with(bookings);
    let server = cal.serve().await;
    (cal, server)
}

fn reconcile_cmd(db: &TestDb, tr: &Transports, base: &str, now: &str) -> Cli {
    let mut cli = tr.apply(db.cmd());
    cli.env("CAL_API_KEY", KEY).env("CAL_API_BASE", base).args([
        "--now",
        now,
        "--json",
        "reconcile",
    ]);
    cli
}

async fn reconcile(db: &TestDb, tr: &Transports, base: &str, now: &str) -> Value {
    let out = reconcile_cmd(db, tr, base, now).run().await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_no_key(&out);
    out.json()["stages"][0]["reconcile"].clone()
}

fn assert_no_key(out: &CliOutput) {
    assert!(!out.stdout.contains(KEY), "key on stdout");
    assert!(!out.stderr.contains(KEY), "key on stderr");
}

async fn webhook(db: &TestDb, tr: &Transports, body: &[u8], now: &str) -> Value {
    let out = signed_webhook(tr.apply(db.cmd()), SECRET, body, now).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    out.json()
}

async fn stage(db: &TestDb, tr: &Transports, command: &str, now: &str) -> Value {
    support::stage_counters(db, tr, command, now).await
}

async fn row(
    c: &tokio_postgres::Client,
    uid: &str,
) -> (Option<String>, Option<DateTime<Utc>>, Option<String>) {
    let r = c
        .query_one(
            "SELECT status, start_time, rescheduled_to_uid FROM cal_bookings WHERE cal_uid = $1",
            &[&uid],
        )
        .await
        .unwrap_or_else(|e| panic!("booking {uid}: {e}"));
    (r.get(0), r.get(1), r.get(2))
}

fn recipients(tr: &Transports) -> Vec<String> {
    let mut all: Vec<String> = tr.emails().iter().flat_map(|m| m.to.clone()).collect();
    all.sort();
    all
}

fn email_of(b: &Value) -> String {
    b["attendees"][0]["email"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn fifty_changes_made_while_the_webhook_was_down_are_caught_by_one_reconcile() {
    let (db, c, tr) = marketplace().await;
    let now = at("2026-03-02T09:00:00Z");
    let h = chrono::Duration::hours;
    let m = chrono::Duration::minutes;

    // Before the outage: ten bookings whose webhooks arrived (confirmed at 07:00).
    let mut olds = Vec::new();
    for i in 0..10 {
        let b = walk_in(
            &format!("Old{i:02}xxxxxxxxxxxxxxxxx"),
            "accepted",
            now + h(24) + m(30),
            now - h(2) + m(i),
            None,
            i as usize,
        );
        webhook(&db, &tr, &created_webhook(&b), "2026-03-02T07:30:00Z").await;
        olds.push(b);
    }
    assert_eq!(tr.emails().len(), 20);

    // During the outage, at Cal.com: 20 new bookings, 10 made and cancelled, 10 moved.
    let mut api = Vec::new();
    let mut news = Vec::new();
    for i in 0..20 {
        let b = walk_in(
            &format!("New{i:02}xxxxxxxxxxxxxxxxx"),
            "accepted",
            now + h(72) + h(i),
            now - h(1) + m(i),
            None,
            10 + i as usize,
        );
        news.push(b.clone());
        api.push(b);
    }
    let mut cancelled = Vec::new();
    for i in 0..10 {
        let b = walk_in(
            &format!("Cxl{i:02}xxxxxxxxxxxxxxxxx"),
            "cancelled",
            now + h(24),
            now - m(40) + m(i),
            Some(now - m(20) + m(i)),
            30 + i as usize,
        );
        cancelled.push(b.clone());
        api.push(b);
    }
    let mut moved_to = Vec::new();
    for (i, old) in olds.iter().enumerate() {
        let old_uid = old["uid"].as_str().unwrap();
        let new_uid = format!("Mov{i:02}xxxxxxxxxxxxxxxxx");
        let mut o = old.clone();
        o["status"] = json!("cancelled");
        o["rescheduledToUid"] = json!(new_uid);
        o["updatedAt"] = json!(iso(now - m(15) + m(i as i64)));
        let mut n = walk_in(
            &new_uid,
            "accepted",
            now + h(48) + m(30),
            now - m(15) + m(i as i64),
            None,
            i,
        );
        n["rescheduledFromUid"] = json!(old_uid);
        api.push(o);
        moved_to.push(n.clone());
        api.push(n);
    }
    assert_eq!(api.len(), 50);
    let (cal, server) = serve_api(api.clone()).await;

    let out = reconcile_cmd(&db, &tr, &server.uri(), "2026-03-02T09:00:00Z")
        .args(["--page-size", "7"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_no_key(&out);
    let report = out.json()["stages"][0]["reconcile"].clone();
    assert_eq!(report["fetched"], 50, "{report}");
    assert_eq!(report["applied"], 40, "{report}");
    assert_eq!(report["failed"], 0, "{report}");

    // Every request: the key, the pinned version, both sweeps, pages of 7.
    let seen = cal.seen();
    assert!(seen
        .iter()
        .all(|s| s.version.as_deref() == Some("2024-08-13")));
    assert!(seen
        .iter()
        .all(|s| s.auth.as_deref() == Some(&*format!("Bearer {KEY}"))));
    assert!(seen.iter().all(|s| s.path == "/v2/bookings"));
    assert_eq!(
        seen.iter()
            .filter(|s| s.query.contains_key("afterCreatedAt"))
            .count(),
        8
    );
    assert_eq!(
        seen.iter()
            .filter(|s| s.query.contains_key("afterUpdatedAt"))
            .count(),
        3
    );
    assert_eq!(
        seen[0].query["afterCreatedAt"],
        iso(now - chrono::Duration::days(7))
    );

    // All 50 rows match the API.
    for b in news.iter().chain(&moved_to) {
        let (status, start, _) = row(&c, b["uid"].as_str().unwrap()).await;
        assert_eq!(status.as_deref(), Some("ACCEPTED"), "{}", b["uid"]);
        assert_eq!(start.map(iso), b["start"].as_str().map(str::to_string));
    }
    for b in &cancelled {
        let (status, start, _) = row(&c, b["uid"].as_str().unwrap()).await;
        assert_eq!(status.as_deref(), Some("CANCELLED"), "{}", b["uid"]);
        assert_eq!(start.map(iso), b["start"].as_str().map(str::to_string));
    }
    for (old, new) in olds.iter().zip(&moved_to) {
        let (status, _, to) = row(&c, old["uid"].as_str().unwrap()).await;
        assert_eq!(status.as_deref(), Some("RESCHEDULED"), "{}", old["uid"]);
        assert_eq!(to.as_deref(), new["uid"].as_str());
    }
    assert_eq!(db.count("SELECT count(*) FROM cal_bookings").await, 50);
    assert_eq!(
        db.count("SELECT count(*) FROM cal_webhook_receipts WHERE source = 'api'")
            .await,
        40
    );

    // Confirmations: once for each new and moved booking, none for the cancelled ones.
    let mut expected: Vec<String> = olds.iter().map(email_of).collect();
    expected.extend(news.iter().chain(&moved_to).map(email_of));
    expected.extend(std::iter::repeat_n(
        "lena.brandt@praxis.example".to_string(),
        40,
    ));
    expected.sort();
    assert_eq!(recipients(&tr), expected);
    let cancelled_mail: BTreeSet<String> = cancelled.iter().map(email_of).collect();
    assert!(recipients(&tr).iter().all(|r| !cancelled_mail.contains(r)));

    // Again five minutes later: nothing new, and it reads from the last success minus 10 min.
    let before = cal.seen().len();
    let again = reconcile(&db, &tr, &server.uri(), "2026-03-02T09:05:00Z").await;
    assert_eq!(again["applied"], 0, "{again}");
    assert_eq!(
        cal.seen()[before].query["afterCreatedAt"],
        "2026-03-02T08:50:00.000Z"
    );
    assert_eq!(tr.emails().len(), 80);

    // Reminders: nothing for the cancelled or old times, then only the new times.
    let counters = stage(&db, &tr, "reminder-24h", "2026-03-02T09:00:00Z").await;
    assert_eq!(counters["sent_email"], 0, "{counters}");
    assert_eq!(tr.emails().len(), 80);
    let counters = stage(&db, &tr, "reminder-24h", "2026-03-03T09:00:00Z").await;
    assert_eq!(counters["sent_email"], 10, "{counters}");
    let reminded: BTreeSet<String> = tr.emails()[80..]
        .iter()
        .flat_map(|m| m.to.clone())
        .collect();
    let new_times: BTreeSet<String> = moved_to.iter().map(email_of).collect();
    assert_eq!(reminded, new_times);

    // audit names every booking that came in through reconcile.
    let out = db
        .cmd()
        .args(["--now", "2026-03-02T09:05:00Z", "--json", "audit"])
        .run()
        .await;
    let audit = out.json();
    assert_eq!(audit["reconciled"].as_array().unwrap().len(), 40, "{audit}");
    let out = db
        .cmd()
        .args(["--now", "2026-03-02T09:05:00Z", "audit"])
        .run()
        .await;
    assert!(
        out.stdout
            .contains("came in through reconcile (webhook lost)"),
        "{}",
        out.stdout
    );
}

/// The row facts both orders must agree on.
async fn snapshot(db: &TestDb, uid: &str) -> Vec<String> {
    let c = db.client().await;
    let r = c
        .query_one(
            "SELECT status, start_time::text, end_time::text, patient_id::text, therapist_id::text,
                    match_id::text, booking_kind, is_test::text, cancelled_at::text,
                    cancellation_reason, request_reschedule::text, rescheduled_to_uid,
                    attendee_email, (client_confirmation_sent_at IS NOT NULL)::text,
                    (therapist_notification_sent_at IS NOT NULL)::text
             FROM cal_bookings WHERE cal_uid = $1",
            &[&uid],
        )
        .await
        .unwrap();
    (0..15)
        .map(|i| {
            r.get::<_, Option<String>>(i)
                .unwrap_or_else(|| "NULL".into())
        })
        .collect()
}

async fn sent_ledger(db: &TestDb) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT b.cal_uid || ' ' || d.stage || ' ' || d.channel || ' ' || d.recipient_role
                    || ' ' || d.status
             FROM journey_deliveries d JOIN cal_bookings b ON b.id = d.booking_id ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The change in `body` told by webhook and by reconcile, the webhook first or not: the first
/// of the two applies it, the second finds nothing left to apply; then both again, any
/// number of times more.
async fn webhook_and_reconcile(
    db: &TestDb,
    tr: &Transports,
    server: &str,
    body: &[u8],
    now: &str,
    webhook_first: bool,
) {
    if webhook_first {
        webhook(db, tr, body, now).await;
        let r = reconcile(db, tr, server, now).await;
        assert_eq!(r["applied"], 0, "{r}");
    } else {
        let r = reconcile(db, tr, server, now).await;
        assert_eq!(r["applied"], 1, "{r}");
        webhook(db, tr, body, now).await;
    }
    reconcile(db, tr, server, now).await;
    webhook(db, tr, body, now).await;
}

#[tokio::test]
async fn a_booking_from_webhook_and_api_in_either_order_is_stored_once_and_confirmed_once() {
    let now = "2026-03-02T09:15:00Z";
    let intro = api_json("booking_intro_accepted.json");
    let uid = "Kx7pR2mWq9TzLc4VbN8sYd";
    let body = cal_fixture("booking_created_intro.json");
    let mut results = Vec::new();
    for webhook_first in [true, false] {
        let (db, _, tr) = marketplace().await;
        let (_, server) = serve_api(vec![intro.clone()]).await;
        webhook_and_reconcile(&db, &tr, &server.uri(), &body, now, webhook_first).await;
        assert_eq!(
            tr.emails().len(),
            2,
            "one confirmation and one therapist notice"
        );
        assert_eq!(db.count("SELECT count(*) FROM cal_bookings").await, 1);
        results.push((snapshot(&db, uid).await, sent_ledger(&db).await));
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0].1.len(), 2, "{:?}", results[0].1);
}

#[tokio::test]
async fn a_cancellation_from_webhook_and_api_in_either_order_has_one_effect_and_one_notice() {
    let cancel = cal_fixture("booking_cancelled_request_reschedule.json");
    let moved = cal_fixture("booking_rescheduled.json");
    let mut cancelled = api_json("booking_cancelled_by_therapist.json");
    cancelled["rescheduledFromUid"] = json!("Fs3nQ8vLx2WpHc7KdM5tRb");
    let mut results = Vec::new();
    for webhook_first in [true, false] {
        let (db, _, tr) = marketplace().await;
        webhook(&db, &tr, &moved, "2026-03-08T07:46:00Z").await;
        assert_eq!(tr.emails().len(), 2);
        let (_, server) = serve_api(vec![cancelled.clone()]).await;
        let now = "2026-03-09T18:10:00Z";
        webhook_and_reconcile(&db, &tr, &server.uri(), &cancel, now, webhook_first).await;
        assert_eq!(
            tr.emails().len(),
            3,
            "the confirmations, then one cancellation notice"
        );
        results.push((
            snapshot(&db, "Rz9mC4wPq7XnLb2VkT6sHf").await,
            snapshot(&db, "Fs3nQ8vLx2WpHc7KdM5tRb").await,
            sent_ledger(&db).await,
        ));
    }
    assert_eq!(results[0], results[1]);
    let rz = &results[0].0;
    assert_eq!(rz[0], "CANCELLED");
    assert_eq!(
        rz[10], "true",
        "the therapist's request to reschedule is kept: {rz:?}"
    );
}

/// Request `i` of the stand-in, after `first`.
fn gap(seen: &[Seen], i: usize) -> Duration {
    seen[i].at.duration_since(seen[i - 1].at)
}

#[tokio::test]
async fn a_429_in_the_middle_of_paging_waits_for_the_reset_and_completes() {
    let (db, _, tr) = marketplace().await;
    let cal = CalApi::default();
    cal.script(vec![
        ResponseTemplate::new(200).set_body_bytes(api_fixture("created_page_1_of_2.json")),
        ResponseTemplate::new(429)
            .insert_header("Retry-After", "1")
            .insert_header("X-RateLimit-Limit-Default", "120")
            .insert_header("X-RateLimit-Remaining-Default", "0")
            .insert_header("X-RateLimit-Reset-Default", "1")
            .set_body_bytes(api_fixture("error_429.json")),
        ResponseTemplate::new(200).set_body_bytes(api_fixture("created_page_2_of_2.json")),
        ResponseTemplate::new(200).set_body_bytes(api_fixture("empty_page.json")),
    ]);
    let server = cal.serve().await;
    let out = reconcile_cmd(&db, &tr, &server.uri(), "2026-03-02T09:00:00Z")
        .args(["--page-size", "2"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json()["stages"][0]["reconcile"].clone();
    assert_eq!(report["applied"], 4, "{report}");
    assert_eq!(report["rate_limited"], 1, "{report}");
    assert_eq!(report["requests"], 4, "{report}");
    let seen = cal.seen();
    assert_eq!(seen.len(), 4);
    // The page that was refused is asked again, once, after the reset it named.
    assert_eq!(seen[1].query, seen[2].query);
    assert_eq!(seen[2].query["skip"], "2");
    assert!(
        gap(&seen, 2) >= Duration::from_secs(1),
        "{:?}",
        gap(&seen, 2)
    );
    for (i, s) in seen.iter().enumerate() {
        let in_a_minute = seen[i..]
            .iter()
            .filter(|t| t.at.duration_since(s.at) < Duration::from_secs(60))
            .count();
        assert!(in_a_minute <= 120);
    }
    assert_eq!(
        db.count("SELECT count(*) FROM cal_bookings WHERE status = 'ACCEPTED'")
            .await,
        4
    );
    assert_eq!(tr.emails().len(), 8);
}

/// A run whose API answers with `script` first: it must fail with exit 1 naming `expect`,
/// write an `error` event and a failed run, and apply nothing.
async fn fails_cleanly(script: Vec<ResponseTemplate>, extra_env: &[(&str, &str)], expect: &str) {
    let (db, _, tr) = marketplace().await;
    let cal = CalApi::default();
    cal.script(script);
    let server = cal.serve().await;
    let mut cli = reconcile_cmd(&db, &tr, &server.uri(), "2026-03-02T09:00:00Z");
    cli.args(["--page-size", "2"]);
    for (k, v) in extra_env {
        cli.env(k, v);
    }
    let out = cli.run().await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_no_key(&out);
    assert!(
        out.stderr.contains(expect),
        "expected {expect:?} in:\n{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("jonas") && !out.stderr.contains("patientin"),
        "{}",
        out.stderr
    );
    let c = db.client().await;
    let events = crate::seed::events(&c, "error").await;
    assert!(
        events.iter().any(|e| e["source"] == "reconcile"
            && e["reason"].as_str().is_some_and(|r| r.contains(expect))),
        "{events:?}"
    );
    assert_eq!(db.count("SELECT count(*) FROM cal_bookings").await, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM cal_webhook_receipts").await,
        0
    );
    assert_eq!(db.count("SELECT count(*) FROM journey_deliveries").await, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM cal_reconcile_runs WHERE outcome = 'failed'")
            .await,
        1
    );
    assert!(tr.emails().is_empty());
}

#[tokio::test]
async fn a_500_from_cal_com_fails_the_run_and_applies_nothing() {
    fails_cleanly(
        vec![ResponseTemplate::new(500).set_body_bytes(api_fixture("error_500.json"))],
        &[],
        "HTTP 500",
    )
    .await;
}

#[tokio::test]
async fn a_failure_on_the_second_page_applies_nothing_from_the_first() {
    fails_cleanly(
        vec![
            ResponseTemplate::new(200).set_body_bytes(api_fixture("created_page_1_of_2.json")),
            ResponseTemplate::new(500).set_body_bytes(api_fixture("error_500.json")),
        ],
        &[],
        "InternalServerErrorException",
    )
    .await;
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_fails_the_run_and_applies_nothing() {
    fails_cleanly(
        vec![ResponseTemplate::new(200)
            .set_body_bytes(api_fixture("created_page_1_of_2.json"))
            .set_delay(Duration::from_secs(10))],
        &[("CAL_API_TIMEOUT", "1s")],
        "did not answer within 1s",
    )
    .await;
}

#[tokio::test]
async fn an_answer_in_the_old_shape_names_the_api_version_header_and_applies_nothing() {
    fails_cleanly(
        vec![ResponseTemplate::new(200).set_body_bytes(api_fixture("old_shape_2024_04_15.json"))],
        &[],
        "cal-api-version: 2024-08-13 was not honoured",
    )
    .await;
}

#[tokio::test]
async fn a_malformed_body_fails_the_run_and_applies_nothing() {
    fails_cleanly(
        vec![ResponseTemplate::new(200).set_body_bytes(api_fixture("malformed.json"))],
        &[],
        "not valid JSON",
    )
    .await;
}

/// A port nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn an_unreachable_api_exits_1_writes_an_error_event_and_status_warns() {
    let (db, _, tr) = marketplace().await;
    let (_, server) = serve_api(vec![api_json("booking_intro_accepted.json")]).await;
    reconcile(&db, &tr, &server.uri(), "2026-03-02T09:15:00Z").await;
    let bookings = db.count("SELECT count(*) FROM cal_bookings").await;
    let receipts = db.count("SELECT count(*) FROM cal_webhook_receipts").await;

    let out = reconcile_cmd(&db, &tr, &closed_port(), "2026-03-02T09:30:00Z")
        .run()
        .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("cannot be reached"), "{}", out.stderr);
    assert_no_key(&out);
    let c = db.client().await;
    let events = crate::seed::events(&c, "error").await;
    assert!(
        events.iter().any(|e| e["source"] == "reconcile"),
        "{events:?}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM cal_bookings").await,
        bookings
    );
    assert_eq!(
        db.count("SELECT count(*) FROM cal_webhook_receipts").await,
        receipts
    );

    // The stages ran on time; only reconcile is behind: a warning.
    let out = tr
        .apply(db.cmd())
        .args([
            "--now",
            "2026-03-02T09:30:00Z",
            "followups",
            "--no-reconcile",
        ])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let out = db
        .cmd()
        .args(["--now", "2026-03-02T09:30:00Z", "--json", "status"])
        .run()
        .await;
    let status = out.json();
    assert_eq!(out.code, 1, "{status}");
    assert_eq!(status["status"], "WARNING", "{status}");
    let flag = status["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["stage"] == "reconcile")
        .unwrap_or_else(|| panic!("{status}"))
        .clone();
    assert_eq!(flag["severity"], "warning");
    assert!(
        flag["message"]
            .as_str()
            .unwrap()
            .contains("reconcile has not succeeded for 15 minutes"),
        "{flag}"
    );
    // Six cadences: critical.
    let out = db
        .cmd()
        .args(["--now", "2026-03-02T09:46:00Z", "--json", "status"])
        .run()
        .await;
    let status = out.json();
    assert!(
        status["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["stage"] == "reconcile" && f["severity"] == "critical"),
        "{status}"
    );
}

#[tokio::test]
async fn followups_reconciles_first_so_a_lost_cancellation_gets_no_reminder() {
    let (db, _, tr) = marketplace().await;
    webhook(
        &db,
        &tr,
        &cal_fixture("booking_created_intro.json"),
        "2026-03-02T09:12:05Z",
    )
    .await;
    assert_eq!(tr.emails().len(), 2);
    // The patient cancelled at 07:00; that webhook was lost.
    let mut intro = api_json("booking_intro_accepted.json");
    intro["status"] = json!("cancelled");
    intro["updatedAt"] = json!("2026-03-05T07:00:00.000Z");
    let (_, server) = serve_api(vec![intro]).await;
    // 08:20: the session (09:20) is inside reminder-1h's window.
    let out = tr
        .apply(db.cmd())
        .env("CAL_API_KEY", KEY)
        .env("CAL_API_BASE", server.uri())
        .args(["--now", "2026-03-05T08:20:00Z", "--json", "followups"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["stages"][0]["stage"], "reconcile", "{report}");
    assert_eq!(report["stages"][0]["counters"]["processed"], 1, "{report}");
    let c = db.client().await;
    assert_eq!(
        row(&c, "Kx7pR2mWq9TzLc4VbN8sYd").await.0.as_deref(),
        Some("CANCELLED")
    );
    let subjects: Vec<String> = tr.emails().iter().map(|m| m.subject()).collect();
    assert!(
        !subjects.iter().any(|s| s.contains("Gleich geht")),
        "reminded of a cancelled session: {subjects:?}"
    );
    assert!(tr.sms().await.is_empty(), "no SMS reminder either");
}

#[tokio::test]
async fn with_cal_org_id_the_organisations_bookings_are_read() {
    let (db, _, tr) = marketplace().await;
    let (cal, server) = serve_api(vec![api_json("booking_intro_accepted.json")]).await;
    let out = reconcile_cmd(&db, &tr, &server.uri(), "2026-03-02T09:15:00Z")
        .env("CAL_ORG_ID", "77")
        .run()
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let seen = cal.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|s| s.path == "/v2/organizations/77/bookings"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_dry_run_reads_the_api_and_writes_nothing() {
    let (db, _, tr) = marketplace().await;
    let (_, server) = serve_api(vec![api_json("booking_intro_accepted.json")]).await;
    let out = reconcile_cmd(&db, &tr, &server.uri(), "2026-03-02T09:15:00Z")
        .arg("--dry-run")
        .run()
        .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["dry_run"], true);
    let changes = &report["stages"][0]["reconcile"]["changes"];
    assert_eq!(changes[0]["cal_uid"], "Kx7pR2mWq9TzLc4VbN8sYd", "{report}");
    assert_eq!(changes[0]["outcome"], "planned");
    for table in [
        "cal_bookings",
        "cal_webhook_receipts",
        "cal_reconcile_runs",
        "journey_runs",
        "events",
    ] {
        assert_eq!(
            db.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    assert!(tr.emails().is_empty());
}

#[tokio::test]
async fn reconcile_without_a_key_or_with_a_refused_key_is_a_configuration_error() {
    let db = TestDb::migrated().await;
    let tr = Transports::start().await;
    let out = tr
        .apply(db.cmd())
        .args(["--now", "2026-03-02T09:15:00Z", "reconcile"])
        .run()
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("CAL_API_KEY is not set"),
        "{}",
        out.stderr
    );

    let cal = CalApi::default();
    cal.script(vec![ResponseTemplate::new(401).set_body_json(
        json!({"status": "error", "error": {"code": "UnauthorizedException", "message": "Invalid API Key"}}),
    )]);
    let server = cal.serve().await;
    let out = reconcile_cmd(&db, &tr, &server.uri(), "2026-03-02T09:15:00Z")
        .run()
        .await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("refused CAL_API_KEY"), "{}", out.stderr);
    assert_no_key(&out);

    let help = Cli::new()
        .env("CAL_API_KEY", KEY)
        .args(["reconcile", "--help"])
        .run()
        .await;
    assert!(!help.stdout.contains(KEY), "{}", help.stdout);
    assert!(help.stdout.contains("CAL_API_KEY"), "{}", help.stdout);
}
