//! SMTP the way providers and company relays run it: STARTTLS on 587 and implicit TLS on 465,
//! AUTH with the URL's (percent-encoded) user and password, a relay certificate from a private
//! CA trusted through `SMTP_CA_FILE`. Each test makes its own throwaway CA and relay
//! certificate and talks to a real SMTP session (see `tls_relay`).
//!
//! The failures an operator has to fix (wrong password, an untrusted or misnamed certificate,
//! no STARTTLS where it is required, a password that would go out in clear text) stop the
//! run with exit 2, naming the cause, and never cost a message: the reminder stays `retry`
//! and goes out once the setting is fixed. The password shows up nowhere.

use std::time::Duration;

use base64::Engine;
use chrono::Duration as Minutes;
use mailin::AuthMechanism;

use crate::harness::{CliOutput, TestDb};
use crate::seed::{self, at, Booking};
use crate::support::{email_row, last_error};
use crate::tls_relay::{userinfo, Ca, Mode, TlsRelay, PASSWORD, USER};

const NOW: &str = "2026-03-09T15:00:00Z";
const UNTRUSTED: &str = "the relay's certificate is not trusted (set SMTP_CA_FILE)";

fn both() -> Vec<AuthMechanism> {
    vec![AuthMechanism::Plain, AuthMechanism::Login]
}

/// A patient with an email address only, due for `reminder-24h` at [`NOW`].
async fn due_reminder(db: &TestDb) -> (tokio_postgres::Client, uuid::Uuid) {
    let c = db.client().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    let b = Booking::new(t, p, at(NOW) + Minutes::hours(24))
        .insert(&c)
        .await;
    (c, b)
}

/// [`due_reminder`] in a fresh database, and a relay in `mode` offering `mechanisms`, its
/// certificate signed by `cert`'s CA for `cert`'s host name (none: a relay without TLS).
async fn due_reminder_and_relay(
    mode: Mode,
    cert: Option<(&Ca, &str)>,
    mechanisms: &[AuthMechanism],
) -> (TestDb, tokio_postgres::Client, uuid::Uuid, TlsRelay) {
    let db = TestDb::migrated().await;
    let (c, b) = due_reminder(&db).await;
    let cert = cert.map(|(ca, host)| ca.relay_cert(&[host]));
    let relay = TlsRelay::start(mode, cert.as_ref(), mechanisms);
    (db, c, b, relay)
}

/// `reminder-24h --json` at `now` with `SMTP_URL=url`, `SMTP_CA_FILE` when given, and any
/// extra environment.
async fn reminder_24h(
    db: &TestDb,
    url: &str,
    ca_file: Option<&std::path::Path>,
    now: chrono::DateTime<chrono::Utc>,
    extra: &[(&str, &str)],
) -> CliOutput {
    reminder_24h_with_flags(db, url, ca_file, now, extra, &[]).await
}

/// [`reminder_24h`] with global `flags` before the others (`-vv`).
async fn reminder_24h_with_flags(
    db: &TestDb,
    url: &str,
    ca_file: Option<&std::path::Path>,
    now: chrono::DateTime<chrono::Utc>,
    extra: &[(&str, &str)],
    flags: &[&str],
) -> CliOutput {
    let mut cli = db.cmd();
    cli.env("SMTP_URL", url)
        .env("EMAIL_FROM", "Praxisteam <termine@praxis.example>")
        .env("PUBLIC_BASE_URL", "https://therapie.example")
        .args(flags)
        .args(["--now", &now.to_rfc3339(), "--json", "reminder-24h"]);
    if let Some(f) = ca_file {
        cli.env("SMTP_CA_FILE", f);
    }
    for (k, v) in extra {
        cli.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), cli.run())
        .await
        .expect("reminder-24h hung")
}

/// Every text the run left in the database that an operator or a dashboard reads.
async fn stored_texts(c: &tokio_postgres::Client) -> String {
    let mut texts = Vec::new();
    for sql in [
        "SELECT coalesce(properties::text, '') FROM events",
        "SELECT coalesce(last_error, '') FROM journey_deliveries",
        "SELECT to_jsonb(r)::text FROM journey_runs r",
    ] {
        for row in c.query(sql, &[]).await.unwrap() {
            texts.push(row.get::<_, String>(0));
        }
    }
    texts.join("\n")
}

/// Asserts the run was a configuration stop (exit 2) that cost no message: the reminder is
/// `retry`, nothing was marked failed, the relay got no mail.
async fn assert_stopped_without_cost(
    out: &CliOutput,
    c: &tokio_postgres::Client,
    booking: uuid::Uuid,
    relay: &TlsRelay,
) {
    assert_eq!(out.code, 2, "{}", out.stderr);
    let counters = &out.json()["stages"][0]["counters"];
    assert_eq!(counters["retry_scheduled"], 1, "{counters}");
    assert_eq!(counters["errors"], 0, "{counters}");
    assert_eq!(seed::ledger(c, booking).await, email_row("retry"));
    assert!(relay.mails().is_empty(), "a message reached the relay");
}

/// Asserts the run succeeded and the reminder is `sent`.
async fn assert_sent(out: &CliOutput, c: &tokio_postgres::Client, booking: uuid::Uuid) {
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(seed::ledger(c, booking).await, email_row("sent"));
}

#[tokio::test]
async fn starttls_with_auth_delivers_through_a_relay_signed_by_the_private_ca_in_smtp_ca_file() {
    let ca = Ca::new("Praxisverbund");
    let (db, c, b, relay) = due_reminder_and_relay(
        Mode::StartTls,
        Some((&ca, "localhost")),
        &[AuthMechanism::Plain],
    )
    .await;
    let url = relay.url("smtp", Some(&userinfo(PASSWORD)), "tls=required");
    let out = reminder_24h(&db, &url, Some(&ca.file), at(NOW), &[]).await;
    assert_sent(&out, &c, b).await;
    let mails = relay.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].over_tls, "the message went out before STARTTLS");
    assert_eq!(mails[0].to, vec!["jonas.weber@example.de".to_string()]);
    let auth = relay.auth_attempts();
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert_eq!(
        (auth[0].mechanism, auth[0].user.as_str(), auth[0].accepted),
        ("PLAIN", USER, true),
        "user and password are percent-decoded from the URL"
    );
    assert!(auth[0].over_tls);
}

#[tokio::test]
async fn a_password_with_ampersand_and_plus_left_as_they_are_in_smtp_url_is_sent_as_written() {
    let ca = Ca::new("Praxisverbund");
    let (db, c, b, relay) = due_reminder_and_relay(
        Mode::Implicit,
        Some((&ca, "localhost")),
        &[AuthMechanism::Plain],
    )
    .await;
    let url = relay.url_as_written("smtps", PASSWORD, "");
    assert!(url.contains("Q&x+y@"), "{url}");
    let out = reminder_24h(&db, &url, Some(&ca.file), at(NOW), &[]).await;
    assert_sent(&out, &c, b).await;
    assert_eq!(relay.auth_attempts().len(), 1);
}

#[tokio::test]
async fn implicit_tls_with_auth_login_delivers_through_smtps() {
    let ca = Ca::new("Praxisverbund");
    let (db, c, b, relay) = due_reminder_and_relay(
        Mode::Implicit,
        Some((&ca, "localhost")),
        &[AuthMechanism::Login],
    )
    .await;
    let url = relay.url("smtps", Some(&userinfo(PASSWORD)), "");
    let out = reminder_24h(&db, &url, Some(&ca.file), at(NOW), &[]).await;
    assert_sent(&out, &c, b).await;
    let mails = relay.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].over_tls);
    let auth = relay.auth_attempts();
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert_eq!(
        (auth[0].mechanism, auth[0].user.as_str(), auth[0].accepted),
        ("LOGIN", USER, true)
    );
}

#[tokio::test]
async fn a_relay_signed_by_a_ca_the_system_store_trusts_works_without_smtp_ca_file() {
    let ca = Ca::new("Firmen");
    let (db, c, b, relay) =
        due_reminder_and_relay(Mode::StartTls, Some((&ca, "localhost")), &both()).await;
    let url = relay.url("smtp", Some(&userinfo(PASSWORD)), "tls=required");
    // The machine's store as OpenSSL-style tools read it: SSL_CERT_FILE names the bundle.
    let store = ca.file.to_str().unwrap();
    let out = reminder_24h(&db, &url, None, at(NOW), &[("SSL_CERT_FILE", store)]).await;
    assert_sent(&out, &c, b).await;
    assert_eq!(relay.mails().len(), 1);
}

#[tokio::test]
async fn a_relay_certificate_from_a_private_ca_is_refused_with_exit_2_until_smtp_ca_file_names_it()
{
    let ca = Ca::new("Praxisverbund");
    let (db, c, b, relay) =
        due_reminder_and_relay(Mode::StartTls, Some((&ca, "localhost")), &both()).await;
    let url = relay.url("smtp", Some(&userinfo(PASSWORD)), "tls=required");

    // A new user's first try: no SMTP_CA_FILE.
    let out = reminder_24h(&db, &url, None, at(NOW), &[]).await;
    assert_stopped_without_cost(&out, &c, b, &relay).await;
    assert!(out.stderr.contains(UNTRUSTED), "{}", out.stderr);
    assert!(last_error(&c, b).await.contains(UNTRUSTED));
    assert!(
        relay.auth_attempts().is_empty(),
        "the password went to a relay whose certificate failed"
    );

    // The operator sets SMTP_CA_FILE: the next run sends the reminder, once.
    let out = reminder_24h(
        &db,
        &url,
        Some(&ca.file),
        at(NOW) + Minutes::minutes(5),
        &[],
    )
    .await;
    assert_sent(&out, &c, b).await;
    assert_eq!(relay.mails().len(), 1);
}

#[tokio::test]
async fn a_relay_certificate_from_another_ca_is_refused_with_exit_2_and_nothing_marked_failed() {
    let ours = Ca::new("Praxisverbund");
    let theirs = Ca::new("Fremd");
    let (db, c, b, relay) =
        due_reminder_and_relay(Mode::Implicit, Some((&theirs, "localhost")), &both()).await;
    let url = relay.url("smtps", Some(&userinfo(PASSWORD)), "");
    let out = reminder_24h(&db, &url, Some(&ours.file), at(NOW), &[]).await;
    assert_stopped_without_cost(&out, &c, b, &relay).await;
    assert!(out.stderr.contains(UNTRUSTED), "{}", out.stderr);
    assert!(out.stderr.contains("SMTP_CA_FILE"), "{}", out.stderr);
    assert!(last_error(&c, b).await.contains(UNTRUSTED));
    assert!(relay.auth_attempts().is_empty());
}

#[tokio::test]
async fn a_relay_certificate_for_another_host_name_is_refused_with_exit_2() {
    let ca = Ca::new("Praxisverbund");
    let (db, c, b, relay) = due_reminder_and_relay(
        Mode::StartTls,
        Some((&ca, "mail.other-practice.example")),
        &both(),
    )
    .await;
    let url = relay.url("smtp", Some(&userinfo(PASSWORD)), "tls=required");
    let out = reminder_24h(&db, &url, Some(&ca.file), at(NOW), &[]).await;
    assert_stopped_without_cost(&out, &c, b, &relay).await;
    let error = last_error(&c, b).await;
    assert!(error.contains(UNTRUSTED), "{error}");
    assert!(
        error.contains("localhost"),
        "names the host it expected: {error}"
    );
    assert!(relay.auth_attempts().is_empty());
}

#[tokio::test]
async fn a_wrong_password_exits_2_keeps_the_reminder_retryable_and_it_goes_out_once_after_the_fix()
{
    let ca = Ca::new("Praxisverbund");
    let (db, c, b, relay) =
        due_reminder_and_relay(Mode::StartTls, Some((&ca, "localhost")), &both()).await;
    let wrong = "Alt-Passwort 2025!";
    let url = relay.url("smtp", Some(&userinfo(wrong)), "tls=required");
    let out = reminder_24h(&db, &url, Some(&ca.file), at(NOW), &[]).await;
    assert_stopped_without_cost(&out, &c, b, &relay).await;
    let error = last_error(&c, b).await;
    assert!(
        error.contains(&format!("SMTP authentication failed for user {USER}")),
        "{error}"
    );
    assert!(out.stderr.contains("SMTP authentication failed for user"));
    for text in [&error, &out.stderr, &out.stdout] {
        assert!(!text.contains(wrong), "the password is shown: {text}");
    }
    assert_eq!(
        relay.auth_attempts().len(),
        1,
        "one refusal stops the channel"
    );

    let fixed = relay.url("smtp", Some(&userinfo(PASSWORD)), "tls=required");
    let out = reminder_24h(
        &db,
        &fixed,
        Some(&ca.file),
        at(NOW) + Minutes::minutes(5),
        &[],
    )
    .await;
    assert_sent(&out, &c, b).await;
    assert_eq!(relay.mails().len(), 1, "delivered exactly once");
}

#[tokio::test]
async fn tls_required_against_a_relay_without_starttls_exits_2_and_costs_no_message() {
    let (db, c, b, relay) = due_reminder_and_relay(Mode::PlainWithAuth, None, &both()).await;
    let url = relay.url("smtp", Some(&userinfo(PASSWORD)), "tls=required");
    let out = reminder_24h(&db, &url, None, at(NOW), &[]).await;
    assert_stopped_without_cost(&out, &c, b, &relay).await;
    let error = last_error(&c, b).await;
    assert!(error.contains("does not offer STARTTLS"), "{error}");
    assert!(relay.auth_attempts().is_empty());
}

#[tokio::test]
async fn a_password_in_an_smtp_url_without_tls_is_refused_before_anything_is_sent() {
    let (db, c, b, relay) = due_reminder_and_relay(Mode::PlainWithAuth, None, &both()).await;
    let url = relay.url("smtp", Some(&userinfo(PASSWORD)), "");
    let out = reminder_24h(&db, &url, None, at(NOW), &[]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("clear text"), "{}", out.stderr);
    assert!(out.stderr.contains("tls=required"), "{}", out.stderr);
    assert!(!out.stderr.contains(PASSWORD));
    assert_eq!(relay.sessions(), 0, "the relay was contacted");
    assert!(seed::ledger(&c, b).await.is_empty(), "nothing was claimed");
}

#[tokio::test]
async fn tls_opportunistic_against_a_relay_without_starttls_never_sends_the_password() {
    let (db, c, b, relay) = due_reminder_and_relay(Mode::PlainWithAuth, None, &both()).await;
    let url = relay.url("smtp", Some(&userinfo(PASSWORD)), "tls=opportunistic");
    let out = reminder_24h(&db, &url, None, at(NOW), &[]).await;
    assert_stopped_without_cost(&out, &c, b, &relay).await;
    assert!(
        relay.auth_attempts().is_empty(),
        "AUTH went out in clear text"
    );
    let error = last_error(&c, b).await;
    assert!(error.contains("clear text"), "{error}");
}

#[tokio::test]
async fn tls_none_said_explicitly_allows_auth_to_a_local_relay_without_tls() {
    let (db, c, b, relay) = due_reminder_and_relay(Mode::PlainWithAuth, None, &both()).await;
    let url = relay.url("smtp", Some(&userinfo(PASSWORD)), "tls=none");
    let out = reminder_24h(&db, &url, None, at(NOW), &[]).await;
    assert_sent(&out, &c, b).await;
    let auth = relay.auth_attempts();
    assert_eq!(auth.len(), 1);
    assert!(auth[0].accepted && !auth[0].over_tls);
}

#[tokio::test]
async fn an_unusable_smtp_ca_file_stops_the_run_with_exit_2_naming_it() {
    let ca = Ca::new("Praxisverbund");
    let (db, c, b, relay) =
        due_reminder_and_relay(Mode::StartTls, Some((&ca, "localhost")), &both()).await;
    let url = relay.url("smtp", Some(&userinfo(PASSWORD)), "tls=required");
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    for (file, why) in [
        (dir.path().join("missing.pem"), "cannot be read"),
        (not_pem, "holds no certificate"),
    ] {
        let out = reminder_24h(&db, &url, Some(&file), at(NOW), &[]).await;
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(out.stderr.contains("SMTP_CA_FILE"), "{}", out.stderr);
        assert!(out.stderr.contains(why), "{}", out.stderr);
    }
    assert_eq!(relay.sessions(), 0);
    assert!(seed::ledger(&c, b).await.is_empty());
}

#[tokio::test]
async fn the_smtp_password_never_appears_in_any_output() {
    let db = TestDb::migrated().await;
    let (c, _) = due_reminder(&db).await;
    let ca = Ca::new("Praxisverbund");
    let other = Ca::new("Fremd");
    let good = TlsRelay::start(
        Mode::StartTls,
        Some(&ca.relay_cert(&["localhost"])),
        &[AuthMechanism::Plain],
    );
    let untrusted = TlsRelay::start(
        Mode::Implicit,
        Some(&other.relay_cert(&["localhost"])),
        &both(),
    );
    let plain = TlsRelay::start(Mode::PlainWithAuth, None, &both());
    let wrong = "Alt-Passwort 2025!";
    let user = userinfo(PASSWORD);
    // Every run but the last leaves the reminder due for the next one.
    let runs = [
        untrusted.url("smtps", Some(&user), ""),
        plain.url("smtp", Some(&user), ""),
        plain.url("smtp", Some(&user), "tls=opportunistic"),
        good.url("smtp", Some(&userinfo(wrong)), "tls=required"),
        good.url("smtp", Some(&user), "tls=required"),
    ];
    let mut seen = Vec::new();
    for (n, url) in runs.iter().enumerate() {
        let now = at(NOW) + Minutes::minutes(5 * n as i64);
        let trace = [("RUST_LOG", "trace")];
        let out = reminder_24h_with_flags(&db, url, Some(&ca.file), now, &trace, &["-vv"]).await;
        // All but the URL refused at start-up get as far as the relay, talking at -vv.
        if n != 1 {
            assert!(out.stderr.contains("DEBUG"), "not verbose: {}", out.stderr);
        }
        seen.push((format!("stdout of run {n}"), out.stdout));
        seen.push((format!("stderr of run {n}"), out.stderr));
    }
    // The last run delivered, so there was something to be verbose about.
    assert_eq!(good.mails().len(), 1);
    let help = crate::harness::Cli::new()
        .env("SMTP_URL", &runs[0])
        .arg("--help")
        .run()
        .await;
    seen.push(("--help".into(), help.stdout));
    seen.push(("the database".into(), stored_texts(&c).await));
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let mut secrets = Vec::new();
    for password in [PASSWORD, wrong] {
        let encoded = userinfo(password).split_once(':').unwrap().1.to_string();
        secrets.extend([
            password.to_string(),
            encoded,
            b64(format!("\0{USER}\0{password}")),
            b64(password.to_string()),
        ]);
    }
    for (what, text) in &seen {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "the password ({secret}) is in {what}:\n{text}"
            );
        }
    }
}
