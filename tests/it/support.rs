//! Setup shared by the test modules of the opt-out, SMS status and quiet-hours work: a fresh
//! database with the transports, and `journeyctl serve` on a free port.

use crate::harness::{Cli, TestDb};
use crate::transports::Transports;

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
pub async fn spawn_serve(mut cli: Cli) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cli.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
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
