//! Load bench of `journeyctl serve` against a trivial HTTP server (issue 11): N signed
//! BOOKING_CREATED bodies (default 3,000) at 64 in flight from one generator, first to a
//! server that answers 200 and does nothing else, then to `serve` on a throwaway PostgreSQL
//! with pg_stat_statements; alternated `--repeat` times (default 3), medians printed. Each
//! server first takes one unmeasured round of 128 requested bookings (warm connections), unless
//! `--cold`: then the measured burst is the first the freshly started server meets. PostgreSQL
//! runs durable (every commit waits for its WAL flush), as in production.
//!
//! For each run: requests/s and p50/p99 latency of the answers, and for `serve` also the time
//! until every booking is stored and both of its confirmations are sent (bookings/s "with the
//! confirmations sent"), statements per confirmed booking, and, from a separate round of
//! BOOKING_REQUESTED bodies (stored, nothing to send), statements per webhook. It fails when a
//! booking is lost or a confirmation is missing.
//!
//! It also measures the CPU time the machine spent per confirmed booking (every process but
//! the generator: `serve`, PostgreSQL, the SMTP sink), and from it the ceiling this machine's
//! cores put on bookings/s: cores ÷ CPU seconds per booking. Run it on a quiet machine: other
//! work counts against us.
//!
//! Run: `bench/webhooks [N] [--repeat R] [--cold]` or
//! `cargo bench --bench webhook_load -- [N] [--repeat R] [--cold]`
//! (needs initdb/pg_ctl like the tests). Confirmations go to `EMAIL_OUTBOX_DIR` (files), or to
//! `BENCH_SMTP_URL` when set (e.g. postfix's smtp-sink). `BENCH_TOP=K` also prints, per run,
//! the K statements that took PostgreSQL the most time (planning tracked too).

use std::time::{Duration, Instant};

use futures::StreamExt;

const SECRET: &str = "whsec_bench";
const IN_FLIGHT: usize = 64;

fn body(trigger: &str, run: &str, i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "triggerEvent": trigger,
        "createdAt": "2026-03-02T09:00:00.000Z",
        "payload": {
            "uid": format!("bench-{run}-{i:06}"),
            "startTime": "2026-03-20T09:00:00Z",
            "endTime": "2026-03-20T09:50:00Z",
            "organizer": {"username": "bench-therapist", "name": "Bench Therapist",
                          "email": "bench@praxis.example", "timeZone": "Europe/Berlin"},
            "attendees": [{"email": format!("patient{i}@example.de"), "name": "Bench Patient",
                           "timeZone": "Europe/Berlin"}],
            "eventTypeId": 2,
            "status": "ACCEPTED",
            "metadata": {"videoCallUrl": "https://app.cal.com/video/bench"}
        }
    }))
    .unwrap()
}

/// Seconds of CPU the whole machine has spent busy since boot (all cores), from /proc/stat.
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal: user, nice, system, irq and softirq are
    // busy. Steal (time the hypervisor gave another guest) is not ours: on a shared host it
    // swings from run to run and would be counted against us.
    let ticks: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| ![3, 4].contains(i) && *i < 7)
        .map(|(_, v)| v)
        .sum();
    busy / clock_ticks()
}

/// Seconds of CPU this process (the generator) has used.
fn own_cpu() -> f64 {
    cpu_of("self")
}

/// Seconds of CPU process `pid` ("self": this one) has used, all its threads, from
/// /proc/PID/stat (0 when it cannot be read). The fields after the command name's closing
/// parenthesis start at the state (field 3), so utime and stime (fields 14 and 15) are the
/// 12th and 13th of them.
fn cpu_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds spent by everything but the generator since `since` (machine, own).
fn others_cpu(since: (f64, f64)) -> f64 {
    (machine_busy() - since.0) - (own_cpu() - since.1)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Load {
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Load {
    fn rate(&self, n: usize) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }
}

/// The generator: every body once, `IN_FLIGHT` at a time, each answer must be 200.
async fn load(http: &reqwest::Client, url: &str, bodies: Vec<(Vec<u8>, String)>) -> Load {
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(bodies)
        .map(|(b, sig)| {
            let http = http.clone();
            let url = url.to_string();
            async move {
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .header("X-Cal-Signature-256", sig)
                    .body(b)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 200, "a webhook was refused");
                let _ = r.bytes().await;
                t.elapsed()
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    latencies.sort();
    Load {
        elapsed,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    }
}

fn signed(trigger: &str, run: &str, n: usize) -> Vec<(Vec<u8>, String)> {
    let secret = journeyctl::secret::Secret::new(SECRET);
    (0..n)
        .map(|i| {
            let b = body(trigger, run, i);
            let sig = journeyctl::webhook::sign(&secret, &b);
            (b, sig)
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_up(http: &reqwest::Client, url: &str) {
    while http.get(url).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The baseline: this bench binary again, as a process that answers every POST with 200 and
/// a small JSON body (what `serve` answers), on a runtime like `serve`'s.
fn trivial_server(port: u16) -> ! {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let app = axum::Router::new()
            .route(
                "/api/public/cal/webhook",
                axum::routing::post(|_body: axum::body::Bytes| async {
                    axum::Json(serde_json::json!({"outcome": "applied", "message": "ok"}))
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok\n" }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        axum::serve(listener, app).await.unwrap();
    });
    std::process::exit(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

async fn scalar(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// Statements PostgreSQL ran in the bench database since the last reset, without the bench's
/// own queries.
async fn statements(c: &tokio_postgres::Client) -> i64 {
    scalar(
        c,
        "SELECT /* bench-own */ coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s
         JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = current_database() AND s.query NOT LIKE '%bench-own%'
           AND s.query NOT ILIKE '%pg_stat_statements%'",
    )
    .await
}

/// With `BENCH_TOP=K`: the K statements of the run that took PostgreSQL the most time,
/// planning and executing (wall-clock inside PostgreSQL, so inflated on a saturated machine).
async fn print_top(c: &tokio_postgres::Client, k: i64) -> anyhow::Result<()> {
    let rows = c
        .query(
            "SELECT /* bench-own */ calls, total_plan_time, total_exec_time, wal_bytes::int8,
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
               FROM pg_stat_statements
              WHERE query NOT LIKE '%bench-own%' AND query NOT ILIKE '%pg_stat_statements%'
              ORDER BY total_plan_time + total_exec_time DESC LIMIT $1",
            &[&k],
        )
        .await?;
    println!(
        "  {:>7} {:>9} {:>9} {:>9}  statement",
        "calls", "plan ms", "exec ms", "WAL kB"
    );
    for r in rows {
        let (calls, plan, exec, wal, q): (i64, f64, f64, i64, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        println!(
            "  {calls:>7} {plan:>9.0} {exec:>9.0} {:>9}  {q}",
            wal / 1024
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--trivial-server") {
        trivial_server(args[i + 1].parse()?);
    }
    tokio::runtime::Runtime::new()?.block_on(bench(args))
}

async fn bench(args: Vec<String>) -> anyhow::Result<()> {
    let n: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3000);
    let repeat: usize = args
        .iter()
        .position(|a| a == "--repeat")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(3);
    // Without the warm round: the first burst a freshly started `serve` (and server) meets.
    let cold = args.iter().any(|a| a == "--cold");
    let smtp = std::env::var("BENCH_SMTP_URL")
        .ok()
        .filter(|s| !s.is_empty());

    let cluster = journeyctl::pgtemp::TempCluster::start(journeyctl::pgtemp::Options {
        tls: false,
        stat_statements: true,
        durable: true,
    })?;
    let url = format!("{}postgres", cluster.base_url);
    let out = tempfile::tempdir()?;
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_journeyctl"))
        .args(["-q", "--database-url", &url, "migrate"])
        .status()?;
    anyhow::ensure!(status.success(), "migrate failed");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
             INSERT INTO therapists (first_name, last_name, email, cal_username, cal_full_session_event_type_id)
             VALUES ('Bench', 'Therapist', 'bench@praxis.example', 'bench-therapist', 2)",
        )
        .await?;
    let top: Option<i64> = std::env::var("BENCH_TOP").ok().and_then(|t| t.parse().ok());
    if top.is_some() {
        // Planning is tracked only when asked: it costs a little on every statement.
        client
            .batch_execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
            .await?;
        client.batch_execute("SELECT pg_reload_conf()").await?;
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()?;

    // The baseline server, started once.
    let trivial_port = free_port();
    let mut trivial = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--trivial-server", &trivial_port.to_string()])
        .kill_on_drop(true)
        .spawn()?;
    let trivial_base = format!("http://127.0.0.1:{trivial_port}");
    wait_up(&http, &format!("{trivial_base}/healthz")).await;

    let mut base_rate = Vec::new();
    let mut base_p50 = Vec::new();
    let mut base_p99 = Vec::new();
    let mut ours_rate = Vec::new();
    let mut ours_p50 = Vec::new();
    let mut ours_p99 = Vec::new();
    let mut confirmed_rate = Vec::new();
    let mut per_booking = Vec::new();
    let mut per_webhook = Vec::new();
    let mut cpu_ms = Vec::new();
    let mut serve_ms = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "webhooks: {n} signed BOOKING_CREATED bodies, {IN_FLIGHT} in flight, {repeat} alternated \
         runs; confirmations to {}",
        smtp.as_deref().unwrap_or("EMAIL_OUTBOX_DIR (files)")
    );
    for run in 0..repeat {
        // Baseline: the same generator against the trivial server, warmed like `serve` below.
        if !cold {
            load(
                &http,
                &format!("{trivial_base}/api/public/cal/webhook"),
                signed(
                    "BOOKING_REQUESTED",
                    &format!("basewarm{run}"),
                    2 * IN_FLIGHT,
                ),
            )
            .await;
        }
        let b = load(
            &http,
            &format!("{trivial_base}/api/public/cal/webhook"),
            signed("BOOKING_CREATED", &format!("base{run}"), n),
        )
        .await;
        base_rate.push(b.rate(n));
        base_p50.push(b.p50.as_secs_f64() * 1e3);
        base_p99.push(b.p99.as_secs_f64() * 1e3);

        // journeyctl serve, fresh process per run.
        client
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await?;
        let port = free_port();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_journeyctl"));
        cmd.args([
            "-q",
            "--database-url",
            &url,
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("CAL_WEBHOOK_SECRET", SECRET)
        .env("EMAIL_FROM", "Praxis <termine@praxis.example>")
        .env("PUBLIC_BASE_URL", "https://therapie.example")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
        match &smtp {
            Some(s) => cmd.env("SMTP_URL", s),
            None => cmd.env("EMAIL_OUTBOX_DIR", out.path()),
        };
        let mut serve = cmd.spawn()?;
        let base = format!("http://127.0.0.1:{port}");
        wait_up(&http, &format!("{base}/healthz")).await;
        // Warm, as a listener that runs for days is: the generator's connections open and the
        // first requested bookings (stored, nothing to send) taken, not counted. `serve` opens
        // its database connections before it listens; the first burst after a start is still
        // slower (this bench without this round: p99 52-54 ms in 2026-11).
        if !cold {
            load(
                &http,
                &format!("{base}/api/public/cal/webhook"),
                signed("BOOKING_REQUESTED", &format!("warm{run}"), 2 * IN_FLIGHT),
            )
            .await;
        }
        client
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await?;
        let prefix = format!("bench-ours{run}-%");
        let started = Instant::now();
        let cpu_at_start = (machine_busy(), own_cpu());
        let serve_pid = serve.id().expect("serve pid");
        let serve_at_start = cpu_of(&serve_pid.to_string());
        let o = load(
            &http,
            &format!("{base}/api/public/cal/webhook"),
            signed("BOOKING_CREATED", &format!("ours{run}"), n),
        )
        .await;
        // Until every booking of this run has both confirmations: all are stored (each was
        // answered 200), so until none of them misses one. Asked through the partial index
        // of unconfirmed bookings, so that the polling costs PostgreSQL next to nothing (its
        // CPU counts against serve's).
        let unconfirmed_sql = format!(
            "SELECT /* bench-own */ count(*) FROM cal_bookings WHERE cal_uid LIKE '{prefix}'
               AND (client_confirmation_sent_at IS NULL
                    OR therapist_notification_sent_at IS NULL)"
        );
        let give_up = Instant::now() + Duration::from_secs(600);
        while scalar(&client, &unconfirmed_sql).await > 0 {
            anyhow::ensure!(
                Instant::now() < give_up,
                "confirmations missing after 10 min"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let all_confirmed = started.elapsed();
        cpu_ms.push(others_cpu(cpu_at_start) * 1e3 / n as f64);
        serve_ms.push((cpu_of(&serve_pid.to_string()) - serve_at_start) * 1e3 / n as f64);
        let stmts = statements(&client).await;
        if let Some(k) = top {
            print_top(&client, k).await?;
        }
        ours_rate.push(o.rate(n));
        ours_p50.push(o.p50.as_secs_f64() * 1e3);
        ours_p99.push(o.p99.as_secs_f64() * 1e3);
        confirmed_rate.push(n as f64 / all_confirmed.as_secs_f64());
        per_booking.push(stmts as f64 / n as f64);

        // Ingest alone: requested bookings are stored and confirm nothing.
        let m = (n / 2).max(100);
        client
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await?;
        let r = load(
            &http,
            &format!("{base}/api/public/cal/webhook"),
            signed("BOOKING_REQUESTED", &format!("req{run}"), m),
        )
        .await;
        per_webhook.push(statements(&client).await as f64 / m as f64);
        println!(
            "  run {}: ingest alone ({m} BOOKING_REQUESTED, nothing to send): {:.0}/s p50 {:.1} ms \
             p99 {:.1} ms",
            run + 1,
            r.rate(m),
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3
        );

        let pid = serve.id().expect("serve pid");
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        let exit = serve.wait().await?;
        anyhow::ensure!(exit.success(), "serve did not exit cleanly: {exit}");
        let stored = scalar(
            &client,
            &format!(
                "SELECT /* bench-own */ count(*) FROM cal_bookings WHERE cal_uid LIKE '{prefix}'"
            ),
        )
        .await;
        anyhow::ensure!(stored as usize == n, "bookings lost: {stored} of {n}");
        println!(
            "  run {}: trivial {:.0}/s p50 {:.1} ms p99 {:.1} ms | serve {:.0}/s p50 {:.1} ms \
             p99 {:.1} ms, all {n} confirmed after {:.2} s ({:.0} bookings/s), {:.1} statements \
             per confirmed booking, {:.1} per webhook, {:.2} ms CPU per confirmed booking ({:.2} ms \
             of it serve's own)",
            run + 1,
            b.rate(n),
            b.p50.as_secs_f64() * 1e3,
            b.p99.as_secs_f64() * 1e3,
            o.rate(n),
            o.p50.as_secs_f64() * 1e3,
            o.p99.as_secs_f64() * 1e3,
            all_confirmed.as_secs_f64(),
            n as f64 / all_confirmed.as_secs_f64(),
            per_booking.last().unwrap(),
            per_webhook.last().unwrap(),
            cpu_ms.last().unwrap(),
            serve_ms.last().unwrap(),
        );
    }
    let _ = trivial.kill().await;

    let (br, or, cr) = (median(base_rate), median(ours_rate), median(confirmed_rate));
    println!("medians of {repeat} runs:");
    println!(
        "  {:<44} {:>14} {:>14} {:>8}",
        "", "journeyctl", "trivial 200", "ratio"
    );
    println!(
        "  {:<44} {:>12.0}/s {:>12.0}/s {:>7.1}%",
        "answers (stored, 200)",
        or,
        br,
        100.0 * or / br
    );
    println!(
        "  {:<44} {:>12.0}/s {:>14} {:>8}",
        "bookings stored with both confirmations sent", cr, "-", "-"
    );
    println!(
        "  {:<44} {:>11.1} ms {:>11.1} ms {:>8}",
        "p50 latency",
        median(ours_p50),
        median(base_p50),
        "-"
    );
    println!(
        "  {:<44} {:>11.1} ms {:>11.1} ms {:>8}",
        "p99 latency",
        median(ours_p99),
        median(base_p99),
        "-"
    );
    println!(
        "  statements per webhook (ingest) {:.1}, per confirmed booking (ingest + confirmations) {:.1}",
        median(per_webhook),
        median(per_booking)
    );
    let per = median(cpu_ms);
    println!(
        "  CPU per confirmed booking (serve + PostgreSQL + sink, all processes but the \
         generator): {per:.2} ms, of it serve's own {:.2} ms; {cores} cores cap bookings/s at \
         {:.0}",
        median(serve_ms),
        cores * 1e3 / per
    );
    drop(cluster);
    Ok(())
}
