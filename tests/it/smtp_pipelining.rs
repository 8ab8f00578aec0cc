//! A relay that offers PIPELINING (RFC 2920) gets each message's envelope in one write: MAIL,
//! RCPT and DATA together, their replies read in order. The relay is postfix's `smtp-sink`,
//! which offers it, dumps every message it accepts into a file, and can be told to refuse a
//! command. What matters: every message arrives once with its own recipient, and a refusal
//! in the middle of a pipelined envelope leaves the message retryable with the relay's own
//! reason, the session still in step for the next one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::{CliOutput, TestDb};
use crate::support::due_for_reminder_24h;

const NOW: &str = "2026-03-09T15:00:00Z";

/// postfix's smtp-sink on a free local port, dumping what it accepts into its own directory.
struct Sink {
    port: u16,
    dumps: tempfile::TempDir,
    process: tokio::process::Child,
}

impl Sink {
    /// Starts smtp-sink.
    async fn start() -> Sink {
        let port = crate::support::free_port();
        let dumps = tempfile::tempdir().unwrap();
        let mut cmd = tokio::process::Command::new(smtp_sink());
        // As root smtp-sink insists on dropping to another user, who must be able to write
        // the dumps.
        if running_as_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dumps.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
            cmd.args(["-u", "nobody"]);
        }
        let template = format!("{}/%Y%m%d.", dumps.path().display());
        cmd.args(["-d", &template, "-c", &format!("127.0.0.1:{port}"), "64"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let process = cmd
            .spawn()
            .expect("postfix's smtp-sink runs (apt-get install postfix)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "smtp-sink never listened");
            tokio::task::yield_now().await;
        }
        Sink {
            port,
            dumps,
            process,
        }
    }

    /// Stops the sink and answers how many SMTP sessions it had: `-c` makes it print its
    /// counters (`sess=N quit=N mesg=N`, `\r` between updates) as they change.
    async fn sessions(self) -> usize {
        crate::support::signal(&self.process, "TERM", false);
        let out = self.process.wait_with_output().await.unwrap();
        let counters = String::from_utf8_lossy(&out.stdout).into_owned();
        let last = counters
            .rsplit('\r')
            .find(|c| c.contains("sess="))
            .unwrap_or("");
        last.split_whitespace()
            .find_map(|c| c.strip_prefix("sess="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("smtp-sink printed no session count: {counters:?}"))
    }

    /// The recipients of every message the sink accepted, one entry per message.
    fn recipients(&self) -> Vec<String> {
        std::fs::read_dir(self.dumps.path())
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .map(|dump| {
                dump.lines()
                    .filter_map(|l| l.strip_prefix("X-Rcpt-Args: "))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }
}

fn smtp_sink() -> PathBuf {
    ["/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("smtp-sink"))
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

async fn reminder_24h(db: &TestDb, sink: &Sink, concurrency: &str) -> CliOutput {
    db.cmd()
        .env(
            "SMTP_URL",
            format!("smtp://127.0.0.1:{}?timeout=5s", sink.port),
        )
        .env("EMAIL_FROM", "Praxisteam <termine@praxis.example>")
        .env("PUBLIC_BASE_URL", "https://therapie.example")
        .args(["--now", NOW, "--json", "reminder-24h"])
        .args(["--concurrency", concurrency])
        .run()
        .await
}

#[tokio::test]
async fn a_relay_offering_pipelining_gets_every_reminder_once_with_its_own_recipient() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    due_for_reminder_24h(&c, NOW, 30, false).await;
    let sink = Sink::start().await;
    let out = reminder_24h(&db, &sink, "4").await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["stages"][0]["counters"]["sent_email"], 30);
    let mut got = sink.recipients();
    got.sort();
    let mut want: Vec<String> = (1..=30)
        .map(|i| format!("<patient{i}@example.de>"))
        .collect();
    want.sort();
    assert_eq!(got, want, "each patient's reminder once, to that patient");
    let sent: i64 = c
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'sent') FROM journey_deliveries",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sent, 30);
    // Four connections carry the 30 messages (one more session is `Sink::start`'s probe).
    assert!(sink.sessions().await <= 5, "sessions were not reused");
}
