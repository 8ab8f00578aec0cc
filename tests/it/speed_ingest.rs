//! Issue 11, ingest side: `serve` answers once the booking is committed and the committed
//! booking is what its confirmations come from (a killed `serve` loses none), a webhook costs
//! few statements, SMS reuse their connections, and `demo` never leaves a PostgreSQL behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::harness::{TestDb, BIN};
use crate::seed::{self, at, Booking};
use crate::support::{self, signal, spawn_serve, terminate};
use crate::transports::{Transports, TWILIO_SID, TWILIO_TOKEN};

const SECRET: &str = "whsec_test_secret_7f3a";
const NOW: &str = "2026-03-02T09:05:00Z";

/// A body of `trigger` for booking `i`: its own uid, therapist and patient.
fn body(trigger: &str, i: usize) -> Vec<u8> {
    let mut v = support::numbered_booking("speed", i);
    v["triggerEvent"] = trigger.into();
    serde_json::to_vec(&v).unwrap()
}

async fn seed_people(db: &TestDb, n: usize) {
    support::seed_people(&db.client().await, n).await;
}

/// Starts `journeyctl serve` and returns once `/healthz` answers.
async fn serve(
    db: &TestDb,
    tr: &Transports,
    smtp_url: Option<&str>,
) -> (tokio::process::Child, String) {
    let mut cli = tr.apply_email_only(db.cmd());
    if let Some(url) = smtp_url {
        cli.env("SMTP_URL", url);
    }
    cli.env("CAL_WEBHOOK_SECRET", SECRET).args(["--now", NOW]);
    spawn_serve(cli).await
}

async fn post(base: &str, body: Vec<u8>) -> reqwest::StatusCode {
    let sig = journeyctl::webhook::sign(&journeyctl::secret::Secret::new(SECRET), &body);
    reqwest::Client::new()
        .post(format!("{base}/api/public/cal/webhook"))
        .header("X-Cal-Signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// An SMTP server that accepts connections and never greets: every send waits at the greeting,
/// before anything of a message left.
async fn silent_smtp() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("smtp://{addr}")
}

#[tokio::test]
async fn bookings_a_killed_serve_committed_but_never_confirmed_are_confirmed_by_the_next_serve() {
    const BOOKINGS: usize = 40;
    let db = TestDb::migrated().await;
    seed_people(&db, BOOKINGS).await;
    let tr = Transports::start().await;

    // The first serve answers every webhook, but its relay never greets: the confirmations
    // it starts hang before a message leaves, the rest wait in its queue. Then it is killed.
    let silent = silent_smtp().await;
    let (mut first, base) = serve(&db, &tr, Some(&silent)).await;
    for i in 0..BOOKINGS {
        assert_eq!(post(&base, body("BOOKING_CREATED", i)).await, 200);
    }
    first.kill().await.unwrap();
    first.wait().await.unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM cal_bookings").await,
        BOOKINGS as i64
    );

    // The next serve starts, takes no webhook, and is stopped: it sent what was owed.
    let (second, _) = serve(&db, &tr, None).await;
    terminate(second).await;

    let c = db.client().await;
    let rows = support::numbered_confirmations(&c, "speed").await;
    let mails = tr.emails();
    let received = |to: &str| support::received(&mails, to);
    let mut cut_off = 0;
    for r in &rows {
        let (uid, role, status) = (&r.uid, &r.role, &r.status);
        let to = r.to.clone().unwrap_or_else(|| {
            panic!("{uid}: no confirmation row after the next serve ({role:?})")
        });
        match status.as_deref() {
            Some("sent") => assert_eq!(received(&to), 1, "{to}"),
            // Claimed by the killed serve, hanging at the greeting: never sent blindly.
            Some("sending" | "in_doubt") => {
                assert_eq!(received(&to), 0, "{to}");
                cut_off += 1;
            }
            other => panic!("{to}: {other:?}"),
        }
    }
    assert_eq!(rows.len(), 2 * BOOKINGS, "both messages of every booking");
    assert!(
        cut_off < rows.len(),
        "the next serve sent the confirmations the killed one only queued"
    );
}

#[tokio::test]
async fn a_webhook_through_serve_costs_at_most_six_statements() {
    const HOOKS: usize = 10;
    let db = TestDb::migrated().await;
    seed_people(&db, HOOKS).await;
    let tr = Transports::start().await;
    count_statements(&db).await;
    let (child, base) = serve(&db, &tr, None).await;
    let before = statements(&db).await;
    // Requested bookings are stored but confirm nothing: only the ingest runs.
    for i in 0..HOOKS {
        assert_eq!(post(&base, body("BOOKING_REQUESTED", i)).await, 200);
    }
    let per_webhook = (statements(&db).await - before) as f64 / HOOKS as f64;
    terminate(child).await;
    assert_eq!(
        db.count("SELECT count(*) FROM cal_bookings WHERE upper(status) = 'PENDING'")
            .await,
        HOOKS as i64
    );
    assert!(
        per_webhook <= 6.0,
        "{per_webhook} statements per webhook (receipt, BEGIN, locks, read, write, COMMIT)"
    );
}

/// Makes PostgreSQL count this test database's statements (the harness's cluster loads
/// `pg_stat_statements`).
async fn count_statements(db: &TestDb) {
    db.client()
        .await
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .expect("pg_stat_statements must be loaded (the harness's cluster loads it)");
}

/// Statements PostgreSQL ran in this test's database so far (the test's own reads of
/// `pg_stat_statements` left out), except those whose text matches `except` (a LIKE pattern).
async fn statements_except(db: &TestDb, except: &str) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid
             WHERE d.datname = current_database()
               AND s.query NOT ILIKE '%pg_stat_statements%' AND s.query NOT LIKE $1",
            &[&except],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
}

/// [`statements_except`] nothing.
async fn statements(db: &TestDb) -> i64 {
    statements_except(db, "").await
}

#[tokio::test]
async fn confirmations_owed_for_many_bookings_share_their_statements_instead_of_costing_eight_each()
{
    const BOOKINGS: usize = 40;
    let db = TestDb::migrated().await;
    seed_people(&db, BOOKINGS).await;
    let tr = Transports::start().await;
    count_statements(&db).await;
    // Stored while the host had not accepted them (nothing is confirmed then), then accepted:
    // committed bookings that owe both confirmations, as a serve that died before sending
    // them leaves them.
    let (first, base) = serve(&db, &tr, None).await;
    for i in 0..BOOKINGS {
        assert_eq!(post(&base, body("BOOKING_REQUESTED", i)).await, 200);
    }
    terminate(first).await;
    db.client()
        .await
        .execute(
            "UPDATE cal_bookings SET status = 'ACCEPTED', last_trigger_event = 'BOOKING_CREATED'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        tr.emails().is_empty(),
        "a requested booking confirms nothing"
    );

    // The next serve finds them all owed at its start and sends them; then it is stopped.
    // The send-started stamps are left out of the count: sends starting together share one,
    // so how many there are depends on timing (at most one per message). The stamp
    // (`ledger::StampSession::stamp`) is the one statement whose SET begins with that column.
    let stamps = "%SET send_started_at%";
    let before = statements_except(&db, stamps).await;
    let (second, _) = serve(&db, &tr, None).await;
    terminate(second).await;
    let spent = statements_except(&db, stamps).await - before;

    let c = db.client().await;
    let rows = support::numbered_confirmations(&c, "speed").await;
    assert_eq!(rows.len(), 2 * BOOKINGS, "both messages of every booking");
    let mails = tr.emails();
    for r in &rows {
        let to = r.to.clone().expect("a confirmation row");
        assert_eq!(r.status.as_deref(), Some("sent"), "{to}");
        assert_eq!(support::received(&mails, &to), 1, "{to}");
    }
    // Per message a claim and a record, per booking its load, patients, ledger rows and
    // opt-outs: about 8 each (324 for these 40 before they were shared). Loaded, claimed and recorded together, the 40
    // bookings and serve's own start and stop cost fewer than one statement per booking.
    assert!(
        spent < BOOKINGS as i64,
        "{spent} statements for {BOOKINGS} bookings' confirmations"
    );
}

// ---- SMS: connections reused -----------------------------------------------------------------

/// Requests the stub holds until this many are waiting, so that many sends are certainly in
/// flight at once (a divisor of the number of SMS and of any chunk size of the driver).
const HELD_TOGETHER: usize = 4;

/// A Twilio-shaped HTTP/1.1 server that answers requests with 201, [`HELD_TOGETHER`] at a
/// time, and keeps the connection open; it counts the connections it accepted and the
/// requests it answered.
async fn counting_twilio() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let together = Arc::new(tokio::sync::Barrier::new(HELD_TOGETHER));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (conns, reqs) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let reqs = reqs.clone();
            let together = together.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut read = BufReader::new(read);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if read.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    together.wait().await;
                    let n = reqs.fetch_add(1, Ordering::SeqCst);
                    let json = format!(r#"{{"sid": "SM{n:032}", "status": "queued"}}"#);
                    let answer = format!(
                        "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\n\r\n{json}",
                        json.len()
                    );
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), connections, requests)
}

#[tokio::test]
async fn sms_sent_eight_at_once_open_at_most_eight_connections() {
    const SMS: usize = 200;
    const CONCURRENCY: usize = 8;
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let now = at("2026-03-09T15:00:00Z");
    for i in 0..SMS {
        // Phone only: the reminder is one SMS.
        let p = seed::patient(&c, "Jonas Weber", None, Some(&format!("+49151{i:08}"))).await;
        Booking::new(t, p, now + Duration::hours(24))
            .insert(&c)
            .await;
    }
    let (twilio, connections, requests) = counting_twilio().await;
    let tr = Transports::start().await;
    let mut cli = tr.apply_email_only(db.cmd());
    cli.env("TWILIO_ACCOUNT_SID", TWILIO_SID)
        .env("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
        .env("TWILIO_FROM", "+4930123456789")
        .env("TWILIO_API_BASE", &twilio)
        .args([
            "--now",
            &now.to_rfc3339(),
            "reminder-24h",
            "--concurrency",
            &CONCURRENCY.to_string(),
        ]);
    let out = cli.run().await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(requests.load(Ordering::SeqCst), SMS);
    assert_eq!(
        db.count(
            "SELECT count(*) FROM journey_deliveries WHERE channel = 'sms' AND status = 'sent'"
        )
        .await,
        SMS as i64
    );
    let opened = connections.load(Ordering::SeqCst);
    assert!(
        opened <= CONCURRENCY,
        "{opened} connections opened for {SMS} SMS at {CONCURRENCY} at once"
    );
}

// ---- demo: no PostgreSQL left behind ----------------------------------------------------------

/// Starts `journeyctl demo` in a process group of its own and returns once it has started its
/// PostgreSQL (`up`) or only named its directory (`!up`: initdb/pg_ctl are running), with the
/// cluster's directory (read from the demo's output).
async fn demo_with_server(
    up: bool,
) -> (tokio::process::Child, std::path::PathBuf, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .args(["demo", "--out"])
        .arg(out.path())
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn journeyctl demo");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut dir = None;
    loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("demo ended before its PostgreSQL was up");
        if let Some(rest) = line.split("PostgreSQL in ").nth(1) {
            let path = rest.split(" (").next().unwrap().trim();
            dir = Some(std::path::PathBuf::from(path));
            if !up {
                break;
            }
        }
        if line.contains("PostgreSQL is up") {
            break;
        }
    }
    let dir = dir.expect("the demo names its cluster's directory");
    if !up {
        // initdb has begun writing.
        wait_for(&dir.join("data")).await;
    }
    if up {
        assert!(
            dir.join("data").is_dir(),
            "{} has no data dir",
            dir.display()
        );
        assert!(postgres_running_in(&dir.join("data")));
    }
    (child, dir, out)
}

/// Whether a postgres process serves the data directory `data` (its command line names it).
fn postgres_running_in(data: &std::path::Path) -> bool {
    let needle = data.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains("postgres") && c.contains(&needle)
                })
                .unwrap_or(false)
        })
}

/// Waits (without sleeping) until `path` exists.
async fn wait_for(path: &std::path::Path) {
    let mut tries = 0u64;
    while !path.exists() {
        tries += 1;
        assert!(tries < 50_000_000, "{} never appeared", path.display());
        tokio::task::yield_now().await;
    }
}

/// The processes whose command line names `dir`, except postgres servers (the cluster's
/// watchdog, an orphaned initdb or pg_ctl).
fn helpers_of(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains(&needle) && !c.contains("bin/postgres ")
                })
                .unwrap_or(false)
        })
        .map(|e| e.path())
        .collect()
}

/// Waits (without sleeping) until every helper process of the cluster has ended: the
/// watchdog's cleanup has run. Without a watchdog this returns at once.
async fn wait_for_cleanup(dir: &std::path::Path) {
    for proc_dir in helpers_of(dir) {
        // Ended: gone, or a zombie nobody reaped.
        while std::fs::read_to_string(proc_dir.join("stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
        {
            tokio::task::yield_now().await;
        }
    }
}

async fn no_postgres_left(mut child: tokio::process::Child, dir: std::path::PathBuf) {
    child.wait().await.unwrap();
    wait_for_cleanup(&dir).await;
    assert!(
        !dir.exists(),
        "{} is still there: the demo left its PostgreSQL behind",
        dir.display()
    );
    assert!(
        !postgres_running_in(&dir.join("data")),
        "a postgres for {} still runs",
        dir.display()
    );
}

#[tokio::test]
async fn a_demo_stopped_with_sigterm_leaves_no_postgresql_and_no_directory() {
    let (child, dir, _out) = demo_with_server(true).await;
    signal(&child, "TERM", false);
    no_postgres_left(child, dir).await;
}

#[tokio::test]
async fn a_demo_whose_process_group_is_killed_leaves_no_postgresql_and_no_directory() {
    let (child, dir, _out) = demo_with_server(true).await;
    // The whole group, as a terminal's Ctrl-C or a supervisor's SIGKILL does.
    signal(&child, "KILL", true);
    no_postgres_left(child, dir).await;
}

#[tokio::test]
async fn a_demo_killed_while_its_postgresql_starts_leaves_no_postgresql_and_no_directory() {
    let (child, dir, _out) = demo_with_server(false).await;
    // In the middle of initdb / pg_ctl start, the whole group at once.
    signal(&child, "KILL", true);
    no_postgres_left(child, dir).await;
}

#[tokio::test]
async fn a_demo_interrupted_while_its_postgresql_starts_leaves_no_postgresql_and_no_directory() {
    let (child, dir, _out) = demo_with_server(false).await;
    // Ctrl-C reaches the whole foreground group.
    signal(&child, "INT", true);
    no_postgres_left(child, dir).await;
}

#[tokio::test]
async fn serve_opens_its_ingest_connections_before_it_takes_the_first_webhook() {
    let db = TestDb::migrated().await;
    let tr = Transports::start().await;
    let mut cli = tr.apply_email_only(db.cmd());
    cli.env("CAL_WEBHOOK_SECRET", SECRET).args(["--now", NOW]);
    // Up (it answers /healthz), and no webhook sent yet.
    let (child, _base) = spawn_serve(cli).await;
    let open = db
        .count(
            "SELECT count(*) FROM pg_stat_activity
              WHERE application_name LIKE 'journeyctl:%' AND datname = current_database()",
        )
        .await;
    // The ingest pool's connections, each with a webhook's statements prepared: the first
    // burst does not wait for the pool to connect.
    let ingest = journeyctl::db::SERVE_INGEST_CONNECTIONS as i64;
    assert!(
        open >= ingest,
        "{open} connection(s) open before the first webhook; the ingest pool has {ingest}"
    );
    terminate(child).await;
}
