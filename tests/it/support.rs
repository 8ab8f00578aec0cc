//! Setup shared by the test modules of the opt-out, SMS status and quiet-hours work: a fresh
//! database with the transports, and `journeyctl serve` on a free port.

use crate::harness::{Cli, CliOutput, TestDb};
use crate::transports::Transports;

/// The patient, therapist and accepted match of [`seed_marketplace`].
pub const PATIENT: &str = "7b1f3c2e-5a4d-4c8e-9f10-2a3b4c5d6e7f";
pub const THERAPIST: &str = "3c9d8e7f-6a5b-4c4d-8e2f-1a0b9c8d7e6f";
pub const MATCH: &str = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";

/// The marketplace rows the Cal.com fixtures book against: patient Jonas Weber, therapist
/// `lena-brandt` (event types 1187/1188) and their accepted match. Returns a client of `db`.
pub async fn seed_marketplace(db: &TestDb) -> tokio_postgres::Client {
    let c = db.client().await;
    c.batch_execute(&format!(
        "INSERT INTO people (id, name, email, phone_number)
           VALUES ('{PATIENT}', 'Jonas Weber', 'jonas.weber@example.de', '+4915112345678');
         INSERT INTO therapists (id, first_name, last_name, email, cal_username,
                                 cal_intro_event_type_id, cal_full_session_event_type_id)
           VALUES ('{THERAPIST}', 'Lena', 'Brandt', 'lena.brandt@praxis.example', 'lena-brandt', 1187, 1188);
         INSERT INTO matches (id, patient_id, therapist_id, status)
           VALUES ('{MATCH}', '{PATIENT}', '{THERAPIST}', 'accepted');"
    ))
    .await
    .unwrap();
    c
}

/// A migrated database, a client of it, and the SMTP server and Twilio stand-in.
pub async fn db_and_transports() -> (TestDb, tokio_postgres::Client, Transports) {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    (db, c, tr)
}

/// The form of every SMS request the Twilio stub received.
pub async fn sms_forms(tr: &Transports) -> Vec<std::collections::HashMap<String, String>> {
    tr.twilio
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| url::form_urlencoded::parse(&r.body).into_owned().collect())
        .collect()
}

/// `cli serve --listen` on a free port of 127.0.0.1, once `/healthz` answers: the process
/// and the base URL it listens on.
pub async fn spawn_serve(cli: Cli) -> (tokio::process::Child, String) {
    spawn_serve_with(cli, &[]).await
}

/// A local port nobody listens on right now: bound, learnt and released.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// [`spawn_serve`] with more arguments of `serve` after `--listen`.
pub async fn spawn_serve_with(
    mut cli: Cli,
    serve_args: &[&str],
) -> (tokio::process::Child, String) {
    let port = free_port();
    cli.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(serve_args);
    let child = cli.spawn();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut tries = 0;
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        tries += 1;
        assert!(tries < 5000, "serve never came up");
        tokio::task::yield_now().await;
    }
    (child, base)
}

/// Sends `kill -<signal>` to the child, or with `group` to its whole process group.
pub fn signal(child: &tokio::process::Child, signal: &str, group: bool) {
    let pid = child.id().unwrap();
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &target])
        .status()
        .unwrap();
}

/// Rows in the ledger (`journey_deliveries`), any status.
pub async fn ledger_rows(c: &tokio_postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM journey_deliveries", &[])
        .await
        .unwrap()
        .get(0)
}

/// Polls `count` until it reaches `n`, yielding between polls; fails, naming `what`, when it
/// never does.
pub async fn wait_for_count<F, Fut>(n: i64, what: &str, mut count: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let mut polls = 0;
    loop {
        let now = count().await;
        if now >= n {
            return;
        }
        polls += 1;
        assert!(polls < 100_000, "{what}: {now} of {n}");
        tokio::task::yield_now().await;
    }
}

/// SIGTERM to a `serve`, which must then exit 0.
pub async fn terminate(mut child: tokio::process::Child) {
    signal(&child, "TERM", false);
    let status = child.wait().await.unwrap();
    assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
}

/// Therapist `therapist-<i>` and a patient `patient-<i>@example.de` for each `i` below `n`.
pub async fn seed_people(c: &tokio_postgres::Client, n: usize) {
    for i in 0..n {
        crate::seed::therapist(c, &format!("therapist-{i}")).await;
        crate::seed::patient(
            c,
            "Jonas Weber",
            Some(&format!("patient-{i}@example.de")),
            None,
        )
        .await;
    }
}

/// The `last_error` of the delivery of `booking` (one delivery), empty when there is none.
pub async fn last_error(c: &tokio_postgres::Client, booking: uuid::Uuid) -> String {
    let error: Option<String> = c
        .query_one(
            "SELECT last_error FROM journey_deliveries WHERE booking_id = $1",
            &[&booking],
        )
        .await
        .unwrap()
        .get(0);
    error.unwrap_or_default()
}

/// A wall-clock time in Berlin, as UTC.
pub fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono_tz::Europe::Berlin
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// `confirmation-recovery` as of `now` with email only, which must exit 0.
pub async fn email_confirmation_recovery(db: &TestDb, tr: &Transports, now: &str) {
    let out = tr
        .apply_email_only(db.cmd())
        .args(["--now", now, "confirmation-recovery"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// `journeyctl preview --out` into a fresh directory, which must exit 0; the directory.
pub async fn preview() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Cli::new()
        .args(["preview", "--out"])
        .arg(dir.path())
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    dir
}

/// The message an SMTP test server is receiving: its recipients and its body so far. The
/// servers' handlers pass each command on to it.
#[derive(Clone, Default)]
pub struct Envelope {
    to: Vec<String>,
    body: Vec<u8>,
}

impl Envelope {
    /// MAIL FROM: a new message begins.
    pub fn mail(&mut self) {
        self.to.clear();
        self.body.clear();
    }

    /// RCPT TO, kept without its angle brackets.
    pub fn rcpt(&mut self, to: &str) {
        self.to
            .push(to.trim_matches(|c| c == '<' || c == '>').to_string());
    }

    /// DATA: the body begins.
    pub fn data_start(&mut self) {
        self.body.clear();
    }

    /// A piece of the body.
    pub fn data(&mut self, buf: &[u8]) {
        self.body.extend_from_slice(buf);
    }

    /// End of DATA: the recipients and the raw message, leaving the envelope empty.
    pub fn take(&mut self) -> (Vec<String>, Vec<u8>) {
        (std::mem::take(&mut self.to), std::mem::take(&mut self.body))
    }
}

/// A Cal.com webhook body from `tests/fixtures/cal`.
pub fn cal_fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cal")
            .join(name),
    )
    .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `cli --now <now> --json webhook` with `body` in a file, signed with `secret`.
pub async fn signed_webhook(mut cli: Cli, secret: &str, body: &[u8], now: &str) -> CliOutput {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, body).unwrap();
    let sig = journeyctl::webhook::sign(&journeyctl::secret::Secret::new(secret), body);
    cli.env("CAL_WEBHOOK_SECRET", secret)
        .args([
            "--now",
            now,
            "--json",
            "webhook",
            "--signature",
            &sig,
            "--file",
        ])
        .arg(&file);
    cli.run().await
}

/// The ledger row (`seed::ledger`) of a `reminder-24h` email to the patient in `status`.
pub fn email_row(status: &str) -> Vec<(String, String, String, String)> {
    vec![(
        "reminder_24h".into(),
        "email".into(),
        "patient".into(),
        status.into(),
    )]
}

/// The full-session BOOKING_CREATED fixture made booking `i`: uid `<uid_prefix>-<i>`, organizer
/// `therapist-<i>`, attendee `patient-<i>@example.de` (see [`seed_people`]), no marketplace
/// metadata.
pub fn numbered_booking(uid_prefix: &str, i: usize) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_slice(&cal_fixture("booking_created_full.json")).unwrap();
    let p = &mut v["payload"];
    p["uid"] = format!("{uid_prefix}-{i}").into();
    p["organizer"]["username"] = format!("therapist-{i}").into();
    p["organizer"]["email"] = format!("therapist-{i}@praxis.example").into();
    p["attendees"][0]["email"] = format!("patient-{i}@example.de").into();
    let meta = p["metadata"].as_object_mut().unwrap();
    meta.retain(|k, _| !k.starts_with("kh_"));
    v
}

/// One stage command as of `now`, which must exit 0; its first stage's counters.
pub async fn stage_counters(
    db: &TestDb,
    tr: &Transports,
    command: &str,
    now: &str,
) -> serde_json::Value {
    let out = tr
        .apply(db.cmd())
        .args(["--now", now, "--json", command])
        .run()
        .await;
    assert_eq!(out.code, 0, "{command}: {}\n{}", out.stdout, out.stderr);
    out.json()["stages"][0]["counters"].clone()
}

/// A confirmation of a booking [`numbered_booking`] made.
pub struct NumberedConfirmation {
    pub uid: String,
    /// `None` (with `status`) for a booking without a confirmation row.
    pub role: Option<String>,
    pub status: Option<String>,
    /// Where the message goes, by its role: `patient-<i>@example.de` or
    /// `therapist-<i>@praxis.example`.
    pub to: Option<String>,
}

/// Every booking's confirmation rows, one row for a booking without any.
pub async fn numbered_confirmations(
    c: &tokio_postgres::Client,
    uid_prefix: &str,
) -> Vec<NumberedConfirmation> {
    let rows = c
        .query(
            "SELECT b.cal_uid, d.recipient_role, d.status FROM cal_bookings b
             LEFT JOIN journey_deliveries d ON d.booking_id = b.id AND d.stage = 'confirmation'",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let uid: String = r.get(0);
            let role: Option<String> = r.get(1);
            let i = uid
                .trim_start_matches(&format!("{uid_prefix}-"))
                .to_string();
            let to = match role.as_deref() {
                Some("patient") => Some(format!("patient-{i}@example.de")),
                Some("therapist") => Some(format!("therapist-{i}@praxis.example")),
                _ => None,
            };
            NumberedConfirmation {
                uid,
                role,
                status: r.get(2),
                to,
            }
        })
        .collect()
}

/// How many of `mails` went to `to`.
pub fn received(mails: &[crate::transports::Mail], to: &str) -> usize {
    mails
        .iter()
        .filter(|m| m.to.iter().any(|t| t == to))
        .count()
}

/// The `mail`, `data_start` and `data` methods of an SMTP test server's `Handler` (of mailin or
/// mailin-embedded) that keeps its message in an `envelope: Envelope` field. `Response`, `OK`
/// and `START_DATA` are the ones in scope where it is used.
macro_rules! envelope_handler_methods {
    () => {
        fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, _from: &str) -> Response {
            self.envelope.mail();
            OK
        }
        fn data_start(&mut self, _d: &str, _f: &str, _is8bit: bool, _to: &[String]) -> Response {
            self.envelope.data_start();
            START_DATA
        }
        fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
            self.envelope.data(buf);
            Ok(())
        }
    };
}
pub(crate) use envelope_handler_methods;

/// Statements the program issued in this database since the last reset (pg_stat_statements).
pub async fn statements(c: &tokio_postgres::Client) -> i64 {
    c.query_one(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s
         JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Resets the statement counts, runs `reminder-24h` at `now` with email only, checks it sent
/// `n` emails, and returns the statements it took.
pub async fn reminder_24h_statements(
    db: &TestDb,
    c: &tokio_postgres::Client,
    now: &str,
    n: usize,
) -> i64 {
    c.query("SELECT pg_stat_statements_reset()", &[])
        .await
        .unwrap();
    let tr = Transports::start().await;
    let out = tr
        .apply_email_only(db.cmd())
        .args(["--now", now, "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(tr.emails().len(), n);
    statements(c).await
}

/// Waits until no connection of a journeyctl process is left on this test's database (a
/// killed process's backends end once PostgreSQL notices; other tests share the server).
pub async fn wait_connections_gone(db: &TestDb) {
    let mut waited = 0;
    while db
        .count(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name LIKE 'journeyctl:%' AND datname = current_database()",
        )
        .await
        > 0
    {
        waited += 1;
        assert!(
            waited < 200_000,
            "the killed run's connections never went away"
        );
        tokio::task::yield_now().await;
    }
}

/// `n` bookings whose session starts 24 hours after `now`, each with its own patient, all
/// confirmed three days ago: due for the 24 h reminder. With `phones`, every patient also has a
/// mobile number (else email only).
pub async fn due_for_reminder_24h(c: &tokio_postgres::Client, now: &str, n: i32, phones: bool) {
    let t = crate::seed::therapist(c, "lena-brandt").await;
    let start = crate::seed::at(now) + chrono::Duration::hours(24);
    c.execute(
        "WITH p AS (
           INSERT INTO people (id, name, email, phone_number)
           SELECT gen_random_uuid(), 'Patient ' || i, 'patient' || i || '@example.de',
                  CASE WHEN $4 THEN '+49151' || lpad(i::text, 8, '0') END
           FROM generate_series(1, $1) AS i
           RETURNING id
         )
         INSERT INTO cal_bookings (cal_uid, therapist_id, patient_id, start_time, end_time,
                                   booking_kind, status, created_at,
                                   client_confirmation_sent_at, therapist_notification_sent_at)
         SELECT 'bulk-' || p.id, $2, p.id, $3::timestamptz, $3::timestamptz + interval '50 minutes',
                'full_session', 'ACCEPTED', $3::timestamptz - interval '3 days',
                $3::timestamptz - interval '3 days', $3::timestamptz - interval '3 days'
         FROM p",
        &[&n, &t, &start, &phones],
    )
    .await
    .unwrap();
}
