//! Load bench of `journeyctl serve`: N signed BOOKING_CREATED bodies (default 3000, 64 in
//! flight) against a listener on a throwaway PostgreSQL, with outbox transports. Measures
//! throughput and latency, probes /healthz during the load, then checks that no booking was
//! lost and that every therapist notice went out after SIGTERM.
//!
//! Run: `cargo bench --bench webhook_load [-- N]` (needs initdb/pg_ctl like the tests).

use std::time::{Duration, Instant};

use futures::StreamExt;

const SECRET: &str = "whsec_bench";

fn body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": "2026-03-02T09:00:00.000Z",
        "payload": {
            "uid": format!("bench-{i:06}"),
            "startTime": "2026-03-20T09:00:00Z",
            "endTime": "2026-03-20T09:50:00Z",
            "organizer": {"username": "bench-therapist", "name": "Bench Therapist"},
            "attendees": [{"email": format!("patient{i}@example.de"), "name": "Bench Patient"}],
            "eventTypeId": 2,
            "status": "ACCEPTED",
            "metadata": {"videoCallUrl": "https://app.cal.com/video/bench"}
        }
    }))
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3000);
    let cluster = journeyctl::pgtemp::TempCluster::start(journeyctl::pgtemp::Options {
        tls: false,
        stat_statements: false,
    })?;
    let url = format!("{}postgres", cluster.base_url);
    let out = tempfile::tempdir()?;
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_journeyctl"))
        .args(["--database-url", &url, "migrate"])
        .status()?;
    anyhow::ensure!(status.success(), "migrate failed");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(
            "INSERT INTO therapists (first_name, last_name, email, cal_username, cal_full_session_event_type_id)
             VALUES ('Bench', 'Therapist', 'bench@praxis.example', 'bench-therapist', 2)",
        )
        .await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_journeyctl"))
        .args([
            "-q",
            "--database-url",
            &url,
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("CAL_WEBHOOK_SECRET", SECRET)
        .env("EMAIL_OUTBOX_DIR", out.path())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        tokio::task::yield_now().await;
    }

    let secret = journeyctl::secret::Secret::new(SECRET);
    let bodies: Vec<(Vec<u8>, String)> = (0..n)
        .map(|i| {
            let b = body(i);
            let sig = journeyctl::webhook::sign(&secret, &b);
            (b, sig)
        })
        .collect();

    // Health probes while the load runs.
    let probe_http = http.clone();
    let probe_base = base.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let prober = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut probes = 0;
        loop {
            let t = Instant::now();
            let ok = probe_http
                .get(format!("{probe_base}/healthz"))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            assert!(ok, "healthz failed under load");
            worst = worst.max(t.elapsed());
            probes += 1;
            tokio::select! {
                _ = &mut stop_rx => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        (probes, worst)
    });

    let started = Instant::now();
    let url_hook = format!("{base}/api/public/cal/webhook");
    let mut latencies: Vec<Duration> = futures::stream::iter(bodies)
        .map(|(b, sig)| {
            let http = http.clone();
            let url = url_hook.clone();
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
                t.elapsed()
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    let (probes, worst_probe) = prober.await?;
    latencies.sort();

    // Graceful stop: queued confirmations finish first.
    let pid = serve.id().expect("serve pid");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let exit = serve.wait().await?;
    let stored: i64 = client
        .query_one("SELECT count(*) FROM cal_bookings", &[])
        .await?
        .get(0);
    let notices: i64 = client
        .query_one(
            "SELECT count(*) FROM journey_deliveries WHERE recipient_role = 'therapist' AND status = 'sent'",
            &[],
        )
        .await?
        .get(0);
    let files = std::fs::read_dir(out.path())?.count();

    println!("webhook_load: {n} signed bodies, 64 in flight");
    println!(
        "  throughput   {:.0} requests/s ({:.2?} total)",
        n as f64 / elapsed.as_secs_f64(),
        elapsed
    );
    println!(
        "  latency      p50 {:.1?}  p95 {:.1?}  p99 {:.1?}  max {:.1?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    println!("  /healthz     {probes} probes during load, slowest {worst_probe:.1?}");
    println!("  stored       {stored} of {n} bookings; {notices} therapist notices sent ({files} .eml files)");
    println!("  serve exit   {exit}");
    anyhow::ensure!(stored as usize == n, "bookings lost");
    anyhow::ensure!(
        notices as usize == n,
        "therapist notices missing after graceful shutdown"
    );
    anyhow::ensure!(exit.success(), "serve did not exit cleanly");
    drop(cluster);
    Ok(())
}
