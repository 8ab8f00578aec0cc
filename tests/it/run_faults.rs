//! A stage run's lifetime (issue 10): its deadline, the stage lock, SIGTERM, losing
//! PostgreSQL mid-run, the `expired` state, the confirmation's re-check of the booking at
//! claim time, and a provider refusing our own credentials. Through the real binary, a real
//! PostgreSQL, the test SMTP server (its gate holds sends) and the Twilio stub.

use chrono::{DateTime, Duration, Utc};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::process::{Child, ChildStderr};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::harness::{Cli, TestDb};
use crate::seed::{self, at, Booking};
use crate::transports::Transports;

/// `n` bookings due for the 24 h reminder at `now`, each with its own emailable patient.
async fn reminders_due(c: &Client, now: DateTime<Utc>, n: usize) -> Vec<Uuid> {
    let t = seed::therapist(c, "lena-brandt").await;
    let mut ids = Vec::new();
    for i in 0..n {
        let p = seed::patient(c, "Patient", Some(&format!("p{i}@example.de")), None).await;
        let start = now + Duration::hours(24) + Duration::minutes(i as i64);
        ids.push(Booking::new(t, p, start).insert(c).await);
    }
    ids
}

/// Reads stderr lines until one contains `needle`; returns everything read so far.
async fn read_until(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<ChildStderr>>,
    needle: &str,
) -> String {
    let mut seen = String::new();
    loop {
        match lines.next_line().await.unwrap() {
            Some(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(needle) {
                    return seen;
                }
            }
            None => panic!("the run ended without logging {needle:?}:\n{seen}"),
        }
    }
}

/// Waits for the child, returning (exit code, stdout, rest of stderr).
async fn finish(
    mut child: Child,
    mut lines: tokio::io::Lines<tokio::io::BufReader<ChildStderr>>,
) -> (i32, String, String) {
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    let mut err = String::new();
    while let Some(l) = lines.next_line().await.unwrap() {
        err.push_str(&l);
        err.push('\n');
    }
    let status = child.wait().await.unwrap();
    (status.code().unwrap_or(-1), out, err)
}

fn stderr_lines(child: &mut Child) -> tokio::io::Lines<tokio::io::BufReader<ChildStderr>> {
    tokio::io::BufReader::new(child.stderr.take().unwrap()).lines()
}

async fn statuses(c: &Client) -> Vec<String> {
    c.query("SELECT status FROM journey_deliveries ORDER BY status", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// (finished, outcome) of every run, oldest first.
async fn runs(c: &Client) -> Vec<(bool, Option<String>)> {
    c.query(
        "SELECT finished_at IS NOT NULL, outcome FROM journey_runs ORDER BY started_at",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn blocking_wait_held(tr: &Transports, n: usize) {
    tokio::task::block_in_place(|| tr.smtp.wait_held(n));
}

/// Starts `reminder-24h` at 4 sends at once with the relay holding every message; returns
/// once 4 are held, with the run's stderr lines.
fn start_held_run(
    db: &TestDb,
    tr: &Transports,
    now: DateTime<Utc>,
) -> (Child, tokio::io::Lines<tokio::io::BufReader<ChildStderr>>) {
    tr.smtp.close_gate();
    let mut cli = tr.apply_email_only(db.cmd());
    let now = now.to_rfc3339();
    cli.args(["--now", &now, "reminder-24h", "--concurrency", "4"]);
    let mut child = cli.spawn();
    let lines = stderr_lines(&mut child);
    blocking_wait_held(tr, 4);
    (child, lines)
}

/// Sends SIGTERM to a held run, waits until the run has taken it in (no new claims), lets the
/// relay answer the held sends, and waits for the run: (exit code, stdout, rest of stderr).
async fn sigterm_and_finish(
    tr: &Transports,
    child: Child,
    mut lines: tokio::io::Lines<tokio::io::BufReader<ChildStderr>>,
) -> (i32, String, String) {
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    read_until(&mut lines, "SIGTERM received").await;
    tr.smtp.open_gate();
    finish(child, lines).await
}

/// The next `reminder-24h` at `now`, which must succeed.
async fn next_run(db: &TestDb, tr: &Transports, now: DateTime<Utc>) {
    let out = tr
        .apply_email_only(db.cmd())
        .args(["--now", &now.to_rfc3339(), "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_sends_records_them_and_exits_143_leaving_nothing_in_doubt() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let now = at("2026-03-09T15:00:00Z");
    reminders_due(&c, now, 20).await;
    let (child, lines) = start_held_run(&db, &tr, now);
    let (code, out, err) = sigterm_and_finish(&tr, child, lines).await;
    assert_eq!(code, 143, "{out}\n{err}");
    let st = statuses(&c).await;
    assert_eq!(st, vec!["sent"; 4], "{err}");
    assert_eq!(tr.emails().len(), 4);
    assert_eq!(runs(&c).await, vec![(true, Some("terminated".into()))]);
    // The 16 never claimed are due for the next run, which sends them.
    next_run(&db, &tr, now).await;
    assert_eq!(tr.emails().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_back_the_batch_claimed_ahead_and_the_next_run_sends_it() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let now = at("2026-03-09T15:00:00Z");
    // All at the same start: 150 minutes apart would leave the reminder's window.
    crate::support::due_for_reminder_24h(&c, "2026-03-09T15:00:00Z", 150, false).await;
    let (child, lines) = start_held_run(&db, &tr, now);
    // Two batches of 64 claimed: the one being sent and the next.
    let what = "rows claimed while the first batch's sends were held";
    crate::support::wait_for_count(128, what, || crate::support::ledger_rows(&c)).await;
    let (code, out, err) = sigterm_and_finish(&tr, child, lines).await;
    assert_eq!(code, 143, "{out}\n{err}");
    // The 4 held sends are recorded; every other claim, of either batch, is given back.
    assert_eq!(statuses(&c).await, vec!["sent"; 4], "{err}");
    assert!(out.contains("retry_scheduled=146"), "{out}");
    next_run(&db, &tr, now).await;
    let mut to: Vec<String> = tr.emails().iter().map(|m| m.to[0].clone()).collect();
    to.sort();
    to.dedup();
    assert_eq!((tr.emails().len(), to.len()), (150, 150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_its_deadline_a_run_stops_claiming_records_what_was_in_flight_and_exits_1() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let now = at("2026-03-09T15:00:00Z");
    reminders_due(&c, now, 20).await;
    tr.smtp.close_gate();
    let mut cli = tr.apply_email_only(db.cmd());
    cli.args([
        "--now",
        &now.to_rfc3339(),
        "reminder-24h",
        "--concurrency",
        "2",
        "--run-deadline",
        "3s",
    ]);
    let mut child = cli.spawn();
    let mut lines = stderr_lines(&mut child);
    // The gate holds whatever was claimed before the deadline (two at most, concurrency 2);
    // it opens only once the run has stopped claiming.
    read_until(&mut lines, "run deadline reached").await;
    tr.smtp.open_gate();
    let (code, out, err) = finish(child, lines).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let held = tr.emails().len();
    assert!(held <= 2, "claimed after the deadline: {held}");
    // In flight at the deadline: answered, recorded `sent`. The rest: no row, due again.
    assert_eq!(statuses(&c).await, vec!["sent"; held], "{err}");
    assert_eq!(runs(&c).await, vec![(true, Some("deadline".into()))]);
    assert!(
        out.contains(&format!("retry_scheduled={}", 20 - held)),
        "{out}"
    );
}

#[tokio::test]
async fn a_run_skipped_for_the_lock_is_recorded_as_skipped_and_a_lock_held_past_its_deadline_is_critical(
) {
    let db = TestDb::migrated().await;
    let holder = db.client().await;
    // A hung run: it holds the stage lock, and its record is open past its deadline.
    holder
        .batch_execute("SET application_name = 'journeyctl:hung-run'")
        .await
        .unwrap();
    let stage = journeyctl::domain::Stage::Reminder24h as i32;
    holder
        .execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&journeyctl::db::STAGE_LOCK_NS, &stage],
        )
        .await
        .unwrap();
    holder
        .execute(
            "INSERT INTO journey_runs (id, command, now, started_at)
             VALUES ($1, 'reminder-24h', now() - interval '20 minutes', now() - interval '20 minutes')",
            &[&Uuid::new_v4()],
        )
        .await
        .unwrap();
    // The hung run's connection is alive, and its deadline passed long ago.
    holder
        .batch_execute(
            "UPDATE journey_runs SET application_name = 'journeyctl:hung-run',
                                     deadline_at = now() - interval '16 minutes'",
        )
        .await
        .unwrap();
    let tr = Transports::start().await;
    let out = tr
        .apply_email_only(db.cmd())
        .arg("reminder-24h")
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("another run holds"), "{}", out.stdout);
    let c = db.client().await;
    let recorded = runs(&c).await;
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1], (true, Some("skipped".into())));
    let status = db.cmd().arg("status").run().await;
    assert_eq!(status.code, 2, "{}", status.stdout);
    assert!(
        status
            .stdout
            .contains("reminder_24h: never completed a run"),
        "a skipped run counted as completed:\n{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("past its deadline"),
        "the hung run's lock is not raised:\n{}",
        status.stdout
    );
}

#[tokio::test]
async fn a_retry_whose_window_closed_expires_on_the_next_run_and_is_raised_by_status_and_audit() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let now = at("2026-03-09T15:00:00Z");
    let ids = reminders_due(&c, now, 1).await;
    tr.smtp_reply_451(true);
    let first = tr
        .apply_email_only(db.cmd())
        .args(["--now", &now.to_rfc3339(), "reminder-24h"])
        .run()
        .await;
    assert_eq!(first.code, 1, "{}", first.stderr);
    assert_eq!(statuses(&c).await, vec!["retry"]);
    // Two hours later the session is 22 h ahead: the 24 h window has closed.
    let later = now + Duration::hours(2);
    let second = tr
        .apply_email_only(db.cmd())
        .args(["--json", "--now", &later.to_rfc3339(), "reminder-24h"])
        .run()
        .await;
    assert_eq!(
        second.json()["stages"][0]["counters"]["expired"],
        1,
        "{}",
        second.stdout
    );
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert_eq!(statuses(&c).await, vec!["expired"]);
    let status = db
        .cmd()
        .args(["--now", &later.to_rfc3339(), "status"])
        .run()
        .await;
    assert_eq!(status.code, 2, "{}", status.stdout);
    assert!(
        status.stdout.contains("expired"),
        "status does not raise the expired delivery:\n{}",
        status.stdout
    );
    let audit = db
        .cmd()
        .args(["--json", "--now", &later.to_rfc3339(), "audit"])
        .run()
        .await;
    let misses = audit.json()["misses"].as_array().unwrap().clone();
    assert!(
        misses.iter().any(|m| m["booking_id"] == ids[0].to_string()
            && m["outcome"] == "expired"
            && m["channel"] == "email"),
        "{}",
        audit.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_cancelled_after_selection_gets_no_confirmation_from_the_queued_run() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let now = at("2026-03-09T15:00:00Z");
    let t1 = seed::therapist(&c, "lena-brandt").await;
    let t2 = seed::therapist(&c, "jonas-weber").await;
    let p1 = seed::patient(&c, "A", Some("first@example.de"), None).await;
    let p2 = seed::patient(&c, "B", Some("second@example.de"), None).await;
    Booking::new(t1, p1, now + Duration::days(2))
        .unconfirmed(now - Duration::hours(2))
        .insert(&c)
        .await;
    let cancelled = Booking::new(t2, p2, now + Duration::days(3))
        .unconfirmed(now - Duration::hours(1))
        .insert(&c)
        .await;
    tr.smtp.close_gate();
    let mut cli = tr.apply_email_only(db.cmd());
    cli.args([
        "--now",
        &now.to_rfc3339(),
        "confirmation-recovery",
        "--concurrency",
        "1",
    ]);
    let mut child = cli.spawn();
    let lines = stderr_lines(&mut child);
    // The run has selected both bookings and is sending the first one's confirmation.
    blocking_wait_held(&tr, 1);
    c.execute(
        "UPDATE cal_bookings SET status = 'CANCELLED', cancelled_at = $2 WHERE id = $1",
        &[&cancelled, &now],
    )
    .await
    .unwrap();
    tr.smtp.open_gate();
    let (code, out, err) = finish(child, lines).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let to: Vec<String> = tr.emails().iter().flat_map(|m| m.to.clone()).collect();
    assert_eq!(to.len(), 2, "{to:?}");
    assert!(
        !to.iter()
            .any(|a| a == "second@example.de" || a == "jonas-weber@praxis.example"),
        "the cancelled booking was confirmed: {to:?}"
    );
}

/// The SMS sender answers Twilio's 401/403 with `SendOutcome::Misconfigured`; the driver stops
/// the channel for the run.
#[tokio::test]
async fn twilio_refusing_our_credentials_stops_sms_for_the_run_keeps_it_due_and_exits_2() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = Transports::start().await;
    let now = at("2026-03-09T15:00:00Z");
    let t = seed::therapist(&c, "lena-brandt").await;
    for i in 0..3 {
        let p = seed::patient(
            &c,
            "Patient",
            Some(&format!("p{i}@example.de")),
            Some(&format!("+491511234567{i}")),
        )
        .await;
        Booking::new(t, p, now + Duration::hours(24) + Duration::minutes(i))
            .insert(&c)
            .await;
    }
    tr.twilio_reply(
        401,
        serde_json::json!({"code": 20003, "message": "Authenticate", "status": 401}),
    )
    .await;
    let out = tr
        .apply(db.cmd())
        .args([
            "--now",
            &now.to_rfc3339(),
            "reminder-24h",
            "--concurrency",
            "1",
        ])
        .run()
        .await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("TWILIO_AUTH_TOKEN"), "{}", out.stderr);
    assert!(!out.stderr.contains(crate::transports::TWILIO_TOKEN));
    assert_eq!(tr.sms().await.len(), 1, "SMS kept going after the 401");
    assert_eq!(tr.emails().len(), 3, "email must not stop with SMS");
    let sms: Vec<String> = c
        .query(
            "SELECT status FROM journey_deliveries WHERE channel = 'sms'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sms, vec!["retry"]);
}

/// `pg_ctl` on the dedicated cluster, as the user that owns it.
fn pg_ctl(cluster: &journeyctl::pgtemp::TempCluster, args: &[&str]) {
    let pg_ctl = journeyctl::pgtemp::pg_bin("pg_ctl").unwrap();
    let root = nix_is_root();
    let mut cmd = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(&pg_ctl);
        c
    } else {
        std::process::Command::new(&pg_ctl)
    };
    cmd.arg("-D").arg(cluster.dir.join("data")).args(args);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "pg_ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_postgresql_mid_run_exits_2_with_the_summary_and_the_next_run_closes_its_record() {
    let cluster = journeyctl::pgtemp::TempCluster::start(journeyctl::pgtemp::Options {
        tls: false,
        stat_statements: false,
        durable: false,
    })
    .unwrap();
    let url = format!("{}postgres", cluster.base_url);
    let out = Cli::new()
        .args(["--database-url", &url, "migrate"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let connect = || async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        c
    };
    let c = connect().await;
    let now = at("2026-03-09T15:00:00Z");
    reminders_due(&c, now, 1).await;
    drop(c);
    let tr = Transports::start().await;
    tr.smtp.close_gate();
    let mut cli = Cli::new();
    cli.args(["--database-url", &url]);
    let mut cli = tr.apply_email_only(cli);
    cli.args(["--now", &now.to_rfc3339(), "reminder-24h"]);
    let mut child = cli.spawn();
    let lines = stderr_lines(&mut child);
    blocking_wait_held(&tr, 1);
    pg_ctl(&cluster, &["-m", "fast", "-w", "stop"]);
    tr.smtp.open_gate();
    let (code, out, err) = finish(child, lines).await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("reminder_24h"),
        "no summary printed:\n{out}\n{err}"
    );
    // PostgreSQL is back: the next run closes the dead run's record.
    let port = cluster
        .base_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/');
    let opts = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -k {}",
        cluster.dir.display()
    );
    let log = cluster.dir.join("restart.log");
    pg_ctl(
        &cluster,
        &["-l", log.to_str().unwrap(), "-w", "-o", &opts, "start"],
    );
    let mut cli = Cli::new();
    cli.args(["--database-url", &url]);
    let out = tr
        .apply_email_only(cli)
        .args(["--now", &now.to_rfc3339(), "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let c = connect().await;
    let recorded = runs(&c).await;
    assert_eq!(
        recorded,
        vec![
            (true, Some("abandoned".into())),
            (true, Some("completed".into()))
        ]
    );
    // The message went out but its answer was never recorded: in doubt, not resent.
    assert_eq!(statuses(&c).await, vec!["in_doubt"]);
    assert_eq!(tr.emails().len(), 1);
}
