//! SMTP relays that misbehave: one that accepts the connection and never greets, one that
//! answers normally up to a chosen step and then goes silent, one that refuses our
//! credentials. The relay here is a small scripted peer over a real local TCP socket (the
//! stalls are what we need to control, which no real server offers). Every run must finish
//! on its own within the per-step deadline (`?timeout=` in `SMTP_URL`) and leave the
//! delivery row where the rule says: `retry` while the relay cannot have taken the message
//! (anything before the final `.`), `in_doubt` only after it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Duration as Days;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{CliOutput, TestDb};
use crate::seed::{self, at, Booking};
use crate::support::{email_row, last_error};

const NOW: &str = "2026-03-09T15:00:00Z";
const PASSWORD: &str = "Geheim-7f3k9";

/// Where the scripted relay stops answering.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stall {
    /// Accepts TCP and never sends the 220 greeting.
    Greeting,
    /// Greets, then never answers EHLO.
    Ehlo,
    /// Offers STARTTLS and says 220 to it, then never starts the TLS handshake.
    StartTls,
    /// Offers AUTH, never answers it.
    Auth,
    /// Answers MAIL, never answers RCPT.
    Rcpt,
    /// Answers DATA with 354, then stops reading the body (its receive buffer is tiny).
    Body,
    /// Reads the whole body including the final `.`, then never answers.
    AfterDot,
    /// Answers everything, but AUTH with 535.
    RefuseAuth,
    /// Offers PIPELINING and answers every RCPT with 450, the DATA behind it with 503.
    RefuseRcptPipelined,
    /// Offers PIPELINING, answers every RCPT with 450, and still opens DATA (354): a broken
    /// relay, where a body (or a bare final `.`) would go to whoever it did accept.
    DataAfterRefusedRcpt,
}

struct ScriptedRelay {
    port: u16,
    /// Every command line the relay received, across sessions.
    received: Arc<Mutex<Vec<String>>>,
}

impl ScriptedRelay {
    fn start(stall: Stall) -> ScriptedRelay {
        let socket = TcpSocket::new_v4().unwrap();
        if stall == Stall::Body {
            // Small enough that a large body cannot fit in the kernel's buffers.
            socket.set_recv_buffer_size(4096).unwrap();
        }
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(session(stream, stall, log.clone()));
            }
        });
        ScriptedRelay { port, received }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?timeout=1s", self.port)
    }

    fn url_with_user(&self) -> String {
        format!(
            "smtp://praxis-mailer:{PASSWORD}@127.0.0.1:{}?tls=none&timeout=1s",
            self.port
        )
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

/// Holds the connection open without answering; still records what arrives (a QUIT sent
/// into a stalled relay would show up here).
async fn go_silent(
    mut lines: tokio::io::Lines<BufReader<TcpStream>>,
    log: Arc<Mutex<Vec<String>>>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        log.lock().unwrap().push(line);
    }
    std::future::pending::<()>().await;
}

async fn session(stream: TcpStream, stall: Stall, log: Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    if stall == Stall::Greeting {
        return go_silent(lines, log).await;
    }
    macro_rules! say {
        ($text:expr) => {
            if lines
                .get_mut()
                .get_mut()
                .write_all($text.as_bytes())
                .await
                .is_err()
            {
                return;
            }
        };
    }
    say!("220 relay.test ESMTP\r\n");
    let pipelining = matches!(
        stall,
        Stall::RefuseRcptPipelined | Stall::DataAfterRefusedRcpt
    );
    while let Ok(Some(line)) = lines.next_line().await {
        log.lock().unwrap().push(line.clone());
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" if stall == Stall::Ehlo => return go_silent(lines, log).await,
            "EHLO" | "HELO" if pipelining => {
                say!("250-relay.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            }
            "EHLO" | "HELO" => {
                say!("250-relay.test\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
            }
            "STAR" if stall == Stall::StartTls => {
                say!("220 2.0.0 Ready to start TLS\r\n");
                return go_silent(lines, log).await;
            }
            "AUTH" if stall == Stall::Auth => return go_silent(lines, log).await,
            "AUTH" => say!("535 5.7.8 Error: authentication failed\r\n"),
            "MAIL" | "RSET" | "NOOP" => say!("250 2.0.0 Ok\r\n"),
            "RCPT" if stall == Stall::Rcpt => return go_silent(lines, log).await,
            "RCPT" if pipelining => say!("450 4.2.1 Mailbox busy, try again later\r\n"),
            "RCPT" => say!("250 2.1.5 Ok\r\n"),
            "DATA" if stall == Stall::RefuseRcptPipelined => {
                say!("503 5.5.1 Error: no valid recipients\r\n")
            }
            "DATA" => {
                say!("354 End data with <CR><LF>.<CR><LF>\r\n");
                if stall == Stall::Body {
                    // Never read again: the sender's writes fill the buffers and block.
                    std::future::pending::<()>().await;
                }
                loop {
                    match lines.next_line().await {
                        Ok(Some(l)) if l == "." => break,
                        Ok(Some(_)) => {}
                        _ => return,
                    }
                }
                log.lock().unwrap().push(".".into());
                if stall == Stall::AfterDot {
                    return go_silent(lines, log).await;
                }
                say!("250 2.0.0 Ok: queued as 4QX1\r\n");
            }
            "QUIT" => {
                say!("221 2.0.0 Bye\r\n");
                return;
            }
            _ => say!("502 5.5.2 Error: command not recognized\r\n"),
        }
    }
}

/// A patient with an email address only, due for `reminder-24h` at [`NOW`].
async fn due_reminder(db: &TestDb) -> (tokio_postgres::Client, uuid::Uuid) {
    let c = db.client().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(&c, "Jonas Weber", Some("jonas.weber@example.de"), None).await;
    let b = Booking::new(t, p, at(NOW) + Days::hours(24))
        .insert(&c)
        .await;
    (c, b)
}

/// Runs `reminder-24h` against `url`; a run that does not finish on its own is the failure
/// this file is about, so the guard is generous and only reports the hang.
async fn reminder_24h(db: &TestDb, url: &str, templates: Option<&std::path::Path>) -> CliOutput {
    let mut cli = db.cmd();
    cli.env("SMTP_URL", url)
        .env("EMAIL_FROM", "Praxisteam <termine@praxis.example>")
        .env("PUBLIC_BASE_URL", "https://therapie.example")
        .args(["--now", NOW, "--json", "reminder-24h"]);
    if let Some(dir) = templates {
        cli.env("JOURNEY_TEMPLATES_DIR", dir);
    }
    tokio::time::timeout(Duration::from_secs(60), cli.run())
        .await
        .expect("reminder-24h hung on a stalled SMTP relay")
}

async fn assert_retryable_after(stall: Stall) {
    let relay = ScriptedRelay::start(stall);
    assert_retryable_at(stall, &relay, &relay.url()).await;
}

async fn assert_retryable_at(stall: Stall, relay: &ScriptedRelay, url: &str) {
    let db = TestDb::migrated().await;
    let (c, b) = due_reminder(&db).await;
    let out = reminder_24h(&db, url, None).await;
    assert_eq!(out.code, 1, "a delivery failed: {}", out.stderr);
    assert_eq!(out.json()["stages"][0]["counters"]["retry_scheduled"], 1);
    assert_eq!(seed::ledger(&c, b).await, email_row("retry"), "{stall:?}");
    let error = last_error(&c, b).await;
    let step = match stall {
        Stall::Greeting => "greeting",
        Stall::Ehlo => "EHLO",
        Stall::StartTls => "TLS handshake",
        Stall::Auth => "AUTH",
        Stall::Rcpt => "RCPT TO",
        other => unreachable!("{other:?} is not a stall before DATA"),
    };
    assert!(error.contains(step), "expected a stall at {step}: {error}");
    let quits = relay
        .received()
        .iter()
        .filter(|l| l.eq_ignore_ascii_case("QUIT"))
        .count();
    assert_eq!(quits, 0, "QUIT was sent into a stalled relay ({stall:?})");
}

#[tokio::test]
async fn a_relay_that_accepts_and_never_greets_leaves_the_reminder_retryable_instead_of_hanging() {
    assert_retryable_after(Stall::Greeting).await;
}

#[tokio::test]
async fn a_relay_that_never_answers_ehlo_leaves_the_reminder_retryable() {
    assert_retryable_after(Stall::Ehlo).await;
}

#[tokio::test]
async fn a_relay_that_never_starts_the_tls_handshake_after_starttls_leaves_the_reminder_retryable()
{
    let relay = ScriptedRelay::start(Stall::StartTls);
    let url = format!("smtp://127.0.0.1:{}?tls=required&timeout=1s", relay.port);
    assert_retryable_at(Stall::StartTls, &relay, &url).await;
}

#[tokio::test]
async fn a_relay_that_never_answers_auth_leaves_the_reminder_retryable() {
    let relay = ScriptedRelay::start(Stall::Auth);
    let url = relay.url_with_user();
    assert_retryable_at(Stall::Auth, &relay, &url).await;
}

#[tokio::test]
async fn a_relay_that_stalls_after_rcpt_leaves_the_reminder_retryable_not_in_doubt() {
    assert_retryable_after(Stall::Rcpt).await;
}

#[tokio::test]
async fn a_relay_that_stops_reading_the_body_leaves_the_reminder_retryable_not_in_doubt() {
    let db = TestDb::migrated().await;
    let (c, b) = due_reminder(&db).await;
    // A body of several megabytes: it cannot all sit in the socket buffers, so the final
    // `.` is never written while the relay does not read.
    let dir = tempfile::tempdir().unwrap();
    let line = "Bitte bringen Sie Ihre Versichertenkarte mit.\n";
    std::fs::write(
        dir.path().join("reminder_24h.txt.hbs"),
        line.repeat(4 * 1024 * 1024 / line.len()),
    )
    .unwrap();
    let relay = ScriptedRelay::start(Stall::Body);
    let out = reminder_24h(&db, &relay.url(), Some(dir.path())).await;
    assert_eq!(out.code, 1, "a delivery failed: {}", out.stderr);
    assert_eq!(out.json()["stages"][0]["counters"]["retry_scheduled"], 1);
    assert_eq!(out.json()["stages"][0]["counters"]["in_doubt"], 0);
    assert_eq!(seed::ledger(&c, b).await, email_row("retry"));
    let error = last_error(&c, b).await;
    assert!(error.contains("message body"), "stalled elsewhere: {error}");
}

#[tokio::test]
async fn a_relay_that_goes_silent_after_the_final_dot_leaves_the_reminder_in_doubt() {
    let db = TestDb::migrated().await;
    let (c, b) = due_reminder(&db).await;
    let relay = ScriptedRelay::start(Stall::AfterDot);
    let out = reminder_24h(&db, &relay.url(), None).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.json()["stages"][0]["counters"]["in_doubt"], 1);
    assert_eq!(seed::ledger(&c, b).await, email_row("in_doubt"));
    assert!(relay.received().iter().any(|l| l == "."));
    assert!(!relay
        .received()
        .iter()
        .any(|l| l.eq_ignore_ascii_case("QUIT")));
}

#[tokio::test]
async fn a_relay_refusing_our_credentials_keeps_the_reminder_retryable_and_never_shows_the_password(
) {
    let db = TestDb::migrated().await;
    let (c, b) = due_reminder(&db).await;
    let relay = ScriptedRelay::start(Stall::RefuseAuth);
    let out = reminder_24h(&db, &relay.url_with_user(), None).await;
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert_eq!(seed::ledger(&c, b).await, email_row("retry"));
    assert!(
        relay.received().iter().any(|l| l.starts_with("AUTH")),
        "the relay was never asked to authenticate"
    );
    assert!(
        !relay.received().iter().any(|l| l.starts_with("MAIL")),
        "a message was offered after the relay refused our credentials"
    );
    let error = last_error(&c, b).await;
    assert!(
        error.contains("SMTP authentication failed for user praxis-mailer"),
        "{error}"
    );
    let events: Vec<String> = c
        .query("SELECT properties::text FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (what, text) in [
        ("stdout", out.stdout.as_str()),
        ("stderr", out.stderr.as_str()),
        ("last_error", error.as_str()),
        ("events", &events.join("\n")),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the password is in {what}: {text}"
        );
    }
}

/// Due reminders for `n` patients, sent at `concurrency` through `relay`: every row `retry`
/// with the relay's reason for its RCPT.
async fn refused_at_rcpt(relay: &ScriptedRelay, n: i32, concurrency: &str) {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    crate::support::due_for_reminder_24h(&c, NOW, n, false).await;
    let mut cli = db.cmd();
    cli.env("SMTP_URL", relay.url())
        .env("EMAIL_FROM", "Praxisteam <termine@praxis.example>")
        .env("PUBLIC_BASE_URL", "https://therapie.example")
        .args([
            "--now",
            NOW,
            "--json",
            "reminder-24h",
            "--concurrency",
            concurrency,
        ]);
    let out = tokio::time::timeout(Duration::from_secs(60), cli.run())
        .await
        .expect("reminder-24h hung");
    assert_eq!(out.code, 1, "deliveries failed: {}", out.stderr);
    assert_eq!(out.json()["stages"][0]["counters"]["retry_scheduled"], n);
    let rows = c
        .query("SELECT status, last_error FROM journey_deliveries", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), n as usize);
    for r in rows {
        let (status, error): (String, String) = (r.get(0), r.get(1));
        assert_eq!(status, "retry");
        assert!(
            error.contains("RCPT TO: 450 4.2.1"),
            "each message refused at its own RCPT, not at a reply left over: {error}"
        );
    }
}

#[tokio::test]
async fn a_refusal_inside_a_pipelined_envelope_leaves_the_reminders_retryable_and_the_sessions_in_step(
) {
    let relay = ScriptedRelay::start(Stall::RefuseRcptPipelined);
    refused_at_rcpt(&relay, 12, "2").await;
    let received = relay.received();
    assert!(!received.iter().any(|l| l == "."), "a body was sent");
    // Every reply of a pipelined envelope is read before the next command, so each refusal
    // is followed by RSET on the same session: two sessions carry all twelve.
    let sessions = received.iter().filter(|l| l.starts_with("EHLO")).count();
    assert!(
        sessions <= 2,
        "{sessions} sessions for 12 messages at 2 at once"
    );
    assert_eq!(received.iter().filter(|l| *l == "RSET").count(), 12);
}

#[tokio::test]
async fn a_relay_opening_data_after_refusing_the_recipient_gets_no_body_and_loses_the_session() {
    let relay = ScriptedRelay::start(Stall::DataAfterRefusedRcpt);
    refused_at_rcpt(&relay, 3, "1").await;
    let received = relay.received();
    assert!(
        !received
            .iter()
            .any(|l| l == "." || l.starts_with("Subject")),
        "a body or a final dot went to a relay that had refused the recipient: {received:?}"
    );
    // The session is out of step (inside DATA): dropped, never reset.
    assert!(!received.iter().any(|l| l == "RSET"), "{received:?}");
    assert_eq!(received.iter().filter(|l| l.starts_with("EHLO")).count(), 3);
}
