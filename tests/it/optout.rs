//! Opt-outs (issue 14): numbers Twilio refuses for good, operator suppressions, the
//! unsubscribe headers and line of the three advertising emails, and `serve`'s unsubscribe
//! endpoint against forged tokens and mail link scanners. Real PostgreSQL, SMTP server and
//! Twilio stand-in (wiremock); `serve` is the compiled binary.

use chrono::Duration;

use crate::harness::{CliOutput, TestDb};
use crate::seed::{self, at, Booking};
use crate::support::{self, db_and_transports, spawn_serve};
use crate::transports::{Mail, Transports, PUBLIC_CALLBACK_BASE, UNSUBSCRIBE_SECRET};

const NOW: &str = "2026-03-09T15:00:00Z";
const EMAIL: &str = "Jonas.Weber@Example.de";
const PHONE: &str = "+4915112345678";

async fn run(db: &TestDb, tr: &Transports, now: &str, stage: &str) -> serde_json::Value {
    let out = tr
        .apply(db.cmd())
        .args(["--now", now, "--json", stage])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()["stages"][0]["counters"].clone()
}

/// A booking of Jonas Weber (email [`EMAIL`], and `phone` when given) with lena-brandt at
/// `start`, not inserted yet.
async fn jonas_booking(
    c: &tokio_postgres::Client,
    phone: Option<&str>,
    start: chrono::DateTime<chrono::Utc>,
) -> Booking {
    let t = seed::therapist(c, "lena-brandt").await;
    let p = seed::patient(c, "Jonas Weber", Some(EMAIL), phone).await;
    Booking::new(t, p, start)
}

/// `journeyctl suppress ARGS`, which must succeed.
async fn suppress(db: &TestDb, args: &[&str]) -> CliOutput {
    let out = db.cmd().arg("suppress").args(args).run().await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    out
}

async fn suppressions(c: &tokio_postgres::Client) -> Vec<(String, String, String, String)> {
    c.query(
        "SELECT channel, address, reason, source FROM suppressions ORDER BY channel, address",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// A booking 24 h ahead whose patient has an email and a phone; Twilio answers `code`.
async fn refused_number(code: i64) {
    let (db, c, tr) = db_and_transports().await;
    tr.twilio_reply(
        400,
        serde_json::json!({"code": code, "message": "refused", "status": 400}),
    )
    .await;
    let b = jonas_booking(&c, Some(PHONE), at(NOW) + Duration::hours(24))
        .await
        .insert(&c)
        .await;

    let first = run(&db, &tr, NOW, "reminder-24h").await;
    assert_eq!(first["sent_email"], 1);
    assert_eq!(tr.sms().await.len(), 1, "the SMS was attempted once");
    let (counter, reason) = match code {
        21610 => ("skipped_opted_out", "twilio_stop"),
        _ => ("skipped_invalid_phone", "twilio_invalid_number"),
    };
    assert_eq!(first[counter], 1, "{first}");
    assert_eq!(
        suppressions(&c).await,
        vec![("sms".into(), PHONE.into(), reason.into(), "twilio".into())]
    );

    // Twilio would accept now: the number is still never attempted again, by any stage.
    tr.twilio.reset().await;
    let one_hour_before = (at(NOW) + Duration::hours(23)).to_rfc3339();
    let later = run(&db, &tr, &one_hour_before, "reminder-1h").await;
    assert_eq!(later["sent_email"], 1, "{later}");
    assert_eq!(later["skipped_opted_out"], 1, "{later}");
    assert_eq!(later["sent_sms"], 0, "{later}");
    assert!(
        tr.sms().await.is_empty(),
        "a suppressed number was attempted"
    );
    assert!(seed::ledger(&c, b).await.contains(&(
        "reminder_1h".into(),
        "sms".into(),
        "patient".into(),
        "skipped".into()
    )));

    // Counted once: a second run inside the window does not count the skip again.
    let five_later = (at(NOW) + Duration::hours(23) + Duration::minutes(5)).to_rfc3339();
    let again = run(&db, &tr, &five_later, "reminder-1h").await;
    assert_eq!(again["skipped_opted_out"], 0, "{again}");
    assert!(tr.sms().await.is_empty());
}

#[tokio::test]
async fn a_stop_reply_21610_suppresses_the_number_and_no_stage_attempts_it_again() {
    refused_number(21610).await;
}

#[tokio::test]
async fn an_invalid_number_21211_is_suppressed_and_never_attempted_again() {
    refused_number(21211).await;
}

#[tokio::test]
async fn operator_suppress_stops_a_channel_and_remove_allows_it_again() {
    let (db, c, tr) = db_and_transports().await;
    jonas_booking(&c, Some(PHONE), at(NOW) + Duration::hours(24))
        .await
        .insert(&c)
        .await;

    let out = suppress(&db, &["jonas.weber@EXAMPLE.de", "--channel", "email"]).await;
    let printed = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(
        !printed.contains("jonas.weber"),
        "full address printed: {printed}"
    );
    assert!(printed.contains("j***@example.de"), "{printed}");
    assert_eq!(
        suppressions(&c).await,
        vec![(
            "email".into(),
            "jonas.weber@example.de".into(),
            "operator".into(),
            "operator".into()
        )]
    );

    let counters = run(&db, &tr, NOW, "reminder-24h").await;
    assert_eq!(counters["sent_email"], 0, "{counters}");
    assert_eq!(counters["sent_sms"], 1, "the other channel still goes");
    assert_eq!(counters["skipped_opted_out"], 1, "{counters}");
    assert!(tr.emails().is_empty());

    let out = suppress(&db, &[EMAIL, "--channel", "email", "--remove"]).await;
    assert!(!out.stdout.to_lowercase().contains("jonas.weber"));
    assert!(suppressions(&c).await.is_empty());
    let one_hour_before = (at(NOW) + Duration::hours(23)).to_rfc3339();
    let counters = run(&db, &tr, &one_hour_before, "reminder-1h").await;
    assert_eq!(counters["sent_email"], 1, "{counters}");
    assert_eq!(tr.emails().len(), 1);

    // An SMS suppression takes a number, in any usual spelling.
    let out = suppress(&db, &["+49 151 1234-5678", "--channel", "sms"]).await;
    assert!(!out.stdout.contains("12345678"), "{}", out.stdout);
    assert_eq!(suppressions(&c).await[0].1, PHONE);
}

#[tokio::test]
async fn suppress_refuses_an_address_that_is_not_one_and_writes_nothing() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    for (address, channel) in [("0151 1234", "sms"), ("kein-at-zeichen", "email")] {
        let out = db
            .cmd()
            .args(["suppress", address, "--channel", channel])
            .run()
            .await;
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(out.stderr.contains("ADDRESS"), "{}", out.stderr);
    }
    let out = db
        .cmd()
        .args(["suppress", "a@b.de", "--channel", "fax"])
        .run()
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(suppressions(&c).await.is_empty());
}

/// One booking per message kind, each with its own patient, all due at `NOW`.
pub(crate) async fn every_kind_due(c: &tokio_postgres::Client) {
    let t = seed::therapist(c, "lena-brandt").await;
    let patient = |n: u32| format!("patient{n}@example.de");
    // Confirmation + therapist notice, and the 24 h reminder.
    let p1 = seed::patient(c, "Anna Roth", Some(&patient(1)), None).await;
    Booking::new(t, p1, at(NOW) + Duration::hours(24))
        .unconfirmed(at(NOW) - Duration::minutes(20))
        .insert(c)
        .await;
    // The 1 h reminder.
    let p2 = seed::patient(c, "Ben Kurz", Some(&patient(2)), None).await;
    Booking::new(t, p2, at(NOW) + Duration::hours(1))
        .insert(c)
        .await;
    // The intro followup: an intro that ended 20 minutes ago.
    let p3 = seed::patient(c, "Clara Haas", Some(&patient(3)), None).await;
    Booking::new(t, p3, at(NOW) - Duration::minutes(35))
        .intro()
        .status(Some("COMPLETED"))
        .insert(c)
        .await;
    // The session followup: a session four days ago, the therapist has free slots.
    let p4 = seed::patient(c, "Dora Lang", Some(&patient(4)), None).await;
    seed::slots(c, t, 3, Some(at(NOW) + Duration::days(2)), at(NOW)).await;
    Booking::new(t, p4, at(NOW) - Duration::days(4))
        .status(Some("COMPLETED"))
        .insert(c)
        .await;
    // The cancellation recovery: cancelled 3 hours ago, matched with another therapist.
    let p5 = seed::patient(c, "Emil Sommer", Some(&patient(5)), None).await;
    let other = seed::therapist(c, "max-other").await;
    seed::matched(c, p5, t).await;
    seed::matched(c, p5, other).await;
    Booking::new(t, p5, at(NOW) + Duration::days(2))
        .cancelled(at(NOW) - Duration::hours(3))
        .insert(c)
        .await;
}

/// Each received email with the stage of its delivery (from its Message-ID).
pub(crate) async fn by_stage(c: &tokio_postgres::Client, mails: Vec<Mail>) -> Vec<(String, Mail)> {
    let mut out = Vec::new();
    for m in mails {
        let id = m
            .header("Message-ID")
            .expect("every email has a Message-ID");
        let id = id.trim_matches(|c| c == '<' || c == '>');
        let delivery: uuid::Uuid = id.split('@').next().unwrap().parse().unwrap();
        let row = c
            .query_one(
                "SELECT stage || '/' || recipient_role FROM journey_deliveries WHERE id = $1",
                &[&delivery],
            )
            .await
            .unwrap();
        out.push((row.get::<_, String>(0), m));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

const ADVERTISING: [&str; 3] = [
    "intro_followup/patient",
    "session_followup/patient",
    "cancellation_recovery/patient",
];

/// `followups --json` at [`NOW`], `flags` first, over [`every_kind_due`] in a fresh database:
/// the run must succeed. Its output, and the emails it sent by stage.
async fn every_kind_through_followups(flags: &[&str]) -> (CliOutput, Vec<(String, Mail)>) {
    let (db, c, tr) = db_and_transports().await;
    every_kind_due(&c).await;
    let out = tr
        .apply(db.cmd())
        .args(flags)
        .args(["--now", NOW, "--json", "followups"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    (out, by_stage(&c, tr.emails()).await)
}

#[tokio::test]
async fn unsubscribe_headers_and_line_are_on_exactly_the_three_advertising_emails() {
    let (_, mails) = every_kind_through_followups(&[]).await;
    let stages: Vec<&str> = mails.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        stages,
        [
            "cancellation_recovery/patient",
            "confirmation/patient",
            "confirmation/therapist",
            "intro_followup/patient",
            "reminder_1h/patient",
            "reminder_24h/patient",
            "session_followup/patient",
        ]
    );
    for (stage, m) in &mails {
        assert_eq!(
            m.header("Auto-Submitted").as_deref(),
            Some("auto-generated"),
            "{stage}"
        );
        let advertises = ADVERTISING.contains(&stage.as_str());
        let list = m.header("List-Unsubscribe");
        assert_eq!(list.is_some(), advertises, "{stage}: {list:?}");
        assert_eq!(
            m.header("List-Unsubscribe-Post").as_deref(),
            advertises.then_some("List-Unsubscribe=One-Click"),
            "{stage}"
        );
        let (text, html) = (m.text(), m.html());
        assert_eq!(text.contains("abmelden"), advertises, "{stage}: {text}");
        assert_eq!(html.contains("Hier abmelden"), advertises, "{stage}");
        let Some(list) = list else { continue };
        let url = list.trim_start_matches('<').trim_end_matches('>');
        let prefix = format!("{PUBLIC_CALLBACK_BASE}/api/public/unsubscribe?t=");
        assert!(url.starts_with(&prefix), "{url}");
        assert!(!url.contains('@') && !url.contains("example.de"), "{url}");
        assert!(text.contains(url), "{stage}: the text shows another link");
        assert!(
            html.contains(url) || html.contains(&url.replace('=', "&#x3D;")),
            "{stage}: the HTML shows another link"
        );
    }
    // Different patients, different tokens.
    let mut links: Vec<String> = mails
        .iter()
        .filter_map(|(_, m)| m.header("List-Unsubscribe"))
        .collect();
    links.dedup();
    assert_eq!(links.len(), 3);
}

#[tokio::test]
async fn without_public_callback_base_advertising_emails_go_out_with_an_opt_out_by_reply() {
    // Nothing is held back (the run succeeds): a followup that never goes out helps nobody.
    let (out, mails) = every_kind_through_followups(&["--public-callback-base="]).await;
    assert!(
        out.stderr.contains("PUBLIC_CALLBACK_BASE") && out.stderr.contains("journeyctl suppress"),
        "the run names the missing setting: {}",
        out.stderr
    );
    assert_eq!(mails.len(), 7, "every due email goes out");
    for (stage, m) in &mails {
        let advertises = ADVERTISING.contains(&stage.as_str());
        let list = m.header("List-Unsubscribe");
        assert_eq!(list.is_some(), advertises, "{stage}: {list:?}");
        // One-click (RFC 8058) needs an https endpoint: never promised for a mailto.
        assert_eq!(m.header("List-Unsubscribe-Post"), None, "{stage}");
        let Some(list) = list else { continue };
        let url = list.trim_start_matches('<').trim_end_matches('>');
        assert!(
            url.starts_with("mailto:") && url.ends_with("?subject=Abmelden"),
            "{stage}: {url}"
        );
        assert!(
            m.text().contains(url),
            "{stage}: the text shows the opt-out"
        );
        assert!(m.html().contains("Hier abmelden"), "{stage}");
    }
}

#[tokio::test]
async fn preview_shows_the_opt_out_line_on_the_three_advertising_messages_only() {
    let dir = support::preview().await;
    let mut seen = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "index.html" || name.ends_with(".sms.txt") {
            continue;
        }
        let body = std::fs::read_to_string(&path).unwrap();
        let advertises = [
            "intro_followup",
            "session_followup",
            "cancellation_recovery",
        ]
        .iter()
        .any(|k| name.starts_with(k));
        assert_eq!(
            body.contains("/api/public/unsubscribe?t") && body.contains("abmelden"),
            advertises,
            "{name}"
        );
        seen += 1;
    }
    assert!(seen >= 20, "{seen} files");
}

/// `journeyctl serve` on a free port, up once `/healthz` answers. Killed when dropped.
pub(crate) struct Serve {
    pub base: String,
    _child: tokio::process::Child,
}

pub(crate) async fn serve(db: &TestDb, tr: &Transports) -> Serve {
    let mut cli = tr.apply(db.cmd());
    cli.env("CAL_WEBHOOK_SECRET", "cal-test-secret");
    let (child, base) = spawn_serve(cli).await;
    Serve {
        base,
        _child: child,
    }
}

/// Sends the followups with unsubscribe links pointing at `serve`.
pub(crate) async fn send_all_with_links_to(db: &TestDb, tr: &Transports, base: &str) {
    let out = tr
        .apply(db.cmd())
        .env("PUBLIC_CALLBACK_BASE", base)
        .args(["--now", NOW, "followups"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// A fresh database (and its client) with [`every_kind_due`], the transports, and `serve`:
/// the followups have gone out with their unsubscribe links pointing at it.
pub(crate) async fn every_kind_sent_with_links_to_serve(
) -> (TestDb, tokio_postgres::Client, Transports, Serve) {
    let (db, c, tr) = db_and_transports().await;
    let server = serve(&db, &tr).await;
    every_kind_due(&c).await;
    send_all_with_links_to(&db, &tr, &server.base).await;
    (db, c, tr, server)
}

/// Every http(s) link of an email: the text part, every `href`, and `List-Unsubscribe`.
fn links_of(m: &Mail) -> Vec<String> {
    let mut links = Vec::new();
    let text = m.text();
    let html = m.html().replace("&#x3D;", "=").replace("&amp;", "&");
    for word in text.split_whitespace().chain(html.split('"')) {
        let w = word.trim_matches(|c: char| "<>()\"',.;".contains(c));
        if w.starts_with("http://") || w.starts_with("https://") {
            links.push(w.to_string());
        }
    }
    if let Some(l) = m.header("List-Unsubscribe") {
        links.push(l.trim_matches(|c| c == '<' || c == '>').to_string());
    }
    links.sort();
    links.dedup();
    links
}

async fn state_of(db: &TestDb) -> (i64, i64, i64) {
    (
        db.count("SELECT count(*) FROM suppressions").await,
        db.count("SELECT count(*) FROM journey_deliveries").await,
        db.count("SELECT count(*) FROM events").await,
    )
}

#[tokio::test]
async fn a_mail_link_scanner_following_every_link_changes_nothing() {
    let (db, _, tr, server) = every_kind_sent_with_links_to_serve().await;
    let mails = tr.emails();
    assert_eq!(mails.len(), 7);
    let before = state_of(&db).await;

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .unwrap();
    let mut ours = 0;
    for m in &mails {
        for link in links_of(m) {
            // Links elsewhere (Cal.com, the marketplace) cannot change our state; a scanner
            // following them reaches other servers.
            if !link.starts_with(&server.base) {
                continue;
            }
            ours += 1;
            let got = http.get(&link).send().await.unwrap();
            assert_eq!(got.status(), 200, "GET {link}");
            let page = got.text().await.unwrap();
            assert!(page.contains("Ja, abmelden"), "{page}");
            let head = http.head(&link).send().await.unwrap();
            assert_eq!(head.status(), 200, "HEAD {link}");
        }
    }
    assert!(
        ours >= 3,
        "the advertising emails link to serve ({ours} links)"
    );
    assert_eq!(state_of(&db).await, before, "a GET or HEAD changed state");
}

#[tokio::test]
async fn one_click_post_suppresses_and_forged_or_garbled_tokens_write_nothing() {
    let (db, c, tr, server) = every_kind_sent_with_links_to_serve().await;
    let link = tr
        .emails()
        .iter()
        .find_map(|m| m.header("List-Unsubscribe"))
        .expect("an advertising email")
        .trim_matches(|c| c == '<' || c == '>')
        .to_string();
    let token = link.split("t=").nth(1).unwrap().to_string();
    let http = reqwest::Client::new();
    let endpoint = format!("{}/api/public/unsubscribe", server.base);
    let before = state_of(&db).await;

    // Forged: the token's last characters changed; signed with another key; garbled; none.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let patient: uuid::Uuid = c
        .query_one("SELECT id FROM people ORDER BY name LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    let other_key = other_key_token(patient);
    for bad in [
        format!("{endpoint}?t={forged}"),
        format!("{endpoint}?t={other_key}"),
        format!("{endpoint}?t=%00%ff%27--"),
        format!("{endpoint}?t={}", "A".repeat(5000)),
        format!("{endpoint}?t="),
        endpoint.clone(),
    ] {
        let r = http
            .post(&bad)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "POST {bad}");
        let r = http.get(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "GET {bad}");
    }
    assert_eq!(state_of(&db).await, before, "a bad token wrote something");

    // RFC 8058: the mail client's one-click POST.
    let r = http
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "",
        "one-click answers with an empty body"
    );
    let rows = suppressions(&c).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "email");
    assert!(rows[0].1.starts_with("patient") && rows[0].1.ends_with("@example.de"));
    assert_eq!(
        (rows[0].2.as_str(), rows[0].3.as_str()),
        ("one_click", "unsubscribe")
    );
    // Twice is once.
    let r = http
        .post(&link)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(suppressions(&c).await.len(), 1);
}

/// A well-formed token for `patient` made with a key that is not the server's.
fn other_key_token(patient: uuid::Uuid) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(b"not the server's key, 32 chars+").unwrap();
    mac.update(b"journeyctl/unsubscribe");
    mac.update(&[0, 1]);
    mac.update(patient.as_bytes());
    let tag = mac.finalize().into_bytes();
    let mut raw = vec![1u8];
    raw.extend_from_slice(patient.as_bytes());
    raw.extend_from_slice(&tag[..16]);
    assert_ne!(
        UNSUBSCRIBE_SECRET.as_bytes(),
        b"not the server's key, 32 chars+"
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

#[tokio::test]
async fn a_suppressed_address_gets_no_cancellation_notice_either() {
    use std::sync::Arc;
    let (db, c, tr) = db_and_transports().await;
    let b = jonas_booking(&c, None, at(NOW) + Duration::days(3))
        .await
        .unconfirmed(at(NOW) - Duration::hours(1))
        .insert(&c)
        .await;
    support::email_confirmation_recovery(&db, &tr, NOW).await;
    let before = tr.emails().len();
    assert_eq!(
        before, 2,
        "confirmation with its invite, and the therapist's notice"
    );
    suppress(&db, &[EMAIL, "--channel", "email"]).await;
    c.execute(
        "UPDATE cal_bookings SET status = 'CANCELLED', cancelled_at = $2 WHERE id = $1",
        &[&b, &at(NOW)],
    )
    .await
    .unwrap();

    // The webhook's path after a committed BOOKING_CANCELLED.
    let settings = journeyctl::config::Settings::from_args(&journeyctl::cli::SettingsArgs {
        smtp_url: Some(tr.smtp.url()),
        email_from: Some("Praxisteam <termine@praxis.example>".into()),
        ..Default::default()
    })
    .unwrap();
    let app = journeyctl::db::ledger::process_application_name();
    let j = journeyctl::stages::Journey {
        db: journeyctl::db::connect_as(&journeyctl::secret::Secret::new(&db.url), 4, &app)
            .await
            .unwrap(),
        templates: Arc::new(
            journeyctl::templates::Templates::load(None, settings.timezone).unwrap(),
        ),
        senders: journeyctl::notify::Senders::from_settings(&settings, false).unwrap(),
        clock: journeyctl::clock::Clock::fixed(at(NOW) + Duration::minutes(5)),
        run_id: uuid::Uuid::new_v4(),
        application_name: app,
        message_id_domain: "praxis.example".into(),
        control: Default::default(),
        settings: Arc::new(settings),
    };
    let report = journeyctl::stages::driver::notify_cancellation(&j, b)
        .await
        .unwrap();
    assert!(!report.failed());
    assert_eq!(
        report
            .counters
            .get(journeyctl::domain::Counter::SkippedOptedOut),
        1
    );
    assert_eq!(
        tr.emails().len(),
        before,
        "a notice went to a suppressed address"
    );
    assert!(seed::ledger(&c, b).await.contains(&(
        "cancellation_notice".into(),
        "email".into(),
        "patient".into(),
        "skipped".into()
    )));
}

#[tokio::test]
async fn a_suppressed_therapist_address_gets_no_notice_while_the_patient_is_confirmed() {
    let (db, c, tr) = db_and_transports().await;
    jonas_booking(&c, None, at(NOW) + Duration::days(3))
        .await
        .unconfirmed(at(NOW) - Duration::hours(1))
        .insert(&c)
        .await;
    suppress(&db, &["lena-brandt@praxis.example", "--channel", "email"]).await;
    let counters = run(&db, &tr, NOW, "confirmation-recovery").await;
    assert_eq!(counters["sent_email"], 1, "{counters}");
    assert_eq!(counters["skipped_opted_out"], 1, "{counters}");
    let to: Vec<String> = tr.emails().iter().flat_map(|m| m.to.clone()).collect();
    assert_eq!(to, vec![EMAIL.to_string()]);
}
