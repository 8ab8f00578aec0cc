//! The connection pool: deadpool over tokio-postgres, TLS through rustls.
//!
//! `sslmode` follows libpq: `disable`; `prefer` and `require` encrypt without checking the
//! certificate (what hosted Postgres such as Supabase expects with `require`); `verify-ca` and
//! `verify-full` check the chain against the Mozilla roots. Connect and statement timeouts are
//! set unless the URL sets them, so an unreachable server fails fast instead of hanging a cron
//! slot.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::secret::{redact_url, Secret};

/// The database could not be reached or refused us: the run exits with status 2.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the database at {target}: {reason} (check DATABASE_URL and that PostgreSQL is running)")]
pub struct Unreachable {
    pub target: String,
    pub reason: String,
}

/// A pool of connections to the journey's database.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db { .. }")
    }
}

/// `serve`: connections that take webhooks. A webhook holds one for its few round trips
/// (well under a millisecond each); more than a handful only queue inside PostgreSQL on a
/// small host, fewer make requests wait for a connection.
pub const SERVE_INGEST_CONNECTIONS: usize = 8;
/// `serve`: pages of bookings whose confirmations are sent at once (each page one task: its
/// bookings loaded in one query, their messages claimed and recorded in batches).
pub const SERVE_CONFIRM_PAGES: usize = 4;
/// `serve`: sends at once within one page of confirmations; the sends wait on SMTP far more
/// than on the database.
pub const SERVE_CONFIRM_SENDS: usize = 8;
/// `serve`: connections of the confirmation pages. A page holds one for its claims, one for
/// its records and one for its send-started stamps, and briefly one for its lookups
/// (confirmations are email only: no second channel's claim); plus `/healthz` and the
/// start-up scan.
pub const SERVE_CONFIRM_CONNECTIONS: usize = 4 * SERVE_CONFIRM_PAGES + 2;

/// Connect timeout unless the URL sets one: an unreachable server fails fast instead of
/// hanging a cron slot.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Statement timeout unless the URL sets one: the longest statement (a batch record) takes
/// well under a second; a minute means something is wrong, not slow.
const STATEMENT_TIMEOUT_MS: u64 = 60_000;
/// How long a task waits for a free pooled connection before failing: longer than any
/// statement holds one, so waiting means the pool is too small, not busy.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Opening a connection: the connect timeout plus the TLS handshake and the startup packet.
const POOL_CREATE_TIMEOUT: Duration = Duration::from_secs(CONNECT_TIMEOUT.as_secs() + 2);
/// Checking a returned connection (fast recycling: no round trip, so this is a safety bound).
const POOL_RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the pool and proves it works with one round trip. Any failure to reach, authenticate
/// or parse the URL is an [`Unreachable`] (or a configuration error) naming the redacted URL.
pub async fn connect(url: &Secret, max_size: usize) -> anyhow::Result<Db> {
    connect_as(url, max_size, "journeyctl").await
}

/// Like [`connect`], with every connection named `application_name` (runs use
/// `journeyctl:<run id>` so other runs can tell they are alive).
pub async fn connect_as(
    url: &Secret,
    max_size: usize,
    application_name: &str,
) -> anyhow::Result<Db> {
    crate::tls::ensure_tls_provider();
    let target = redact_url(url.expose());
    let (raw, verify) = split_verify_mode(url.expose());
    let mut cfg = tokio_postgres::Config::from_str(&raw).map_err(|e| {
        crate::config::ConfigError::new(format!(
            "DATABASE_URL ({target}) is not a valid PostgreSQL URL: {e}"
        ))
    })?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(CONNECT_TIMEOUT);
    }
    let mut options = cfg.get_options().unwrap_or("").to_string();
    if !options.contains("statement_timeout") {
        options.push_str(&format!(" -c statement_timeout={STATEMENT_TIMEOUT_MS}"));
    }
    cfg.options(options.trim());
    cfg.application_name(application_name);

    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls_config(verify));
    let mgr = Manager::from_config(
        cfg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(mgr)
        .max_size(max_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(POOL_CREATE_TIMEOUT))
        .recycle_timeout(Some(POOL_RECYCLE_TIMEOUT))
        .build()
        .context("Failed to build the database pool")?;
    let db = Db { pool };
    let client = db.pool.get().await.map_err(|e| Unreachable {
        target: target.clone(),
        reason: error_chain(&e),
    })?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| Unreachable {
            target,
            reason: error_chain(&e),
        })?;
    Ok(db)
}

impl Db {
    /// A pooled connection, with context for the error.
    pub async fn client(&self) -> anyhow::Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            anyhow::anyhow!("Failed to get a database connection: {}", error_chain(&e))
        })
    }

    /// A pooled connection if one is free (or can be opened) now; `None` rather than waiting
    /// for one: for work that can fall back on a connection it holds already.
    pub async fn spare_client(&self) -> Option<deadpool_postgres::Object> {
        let now = deadpool_postgres::Timeouts {
            wait: Some(Duration::ZERO),
            create: Some(POOL_CREATE_TIMEOUT),
            recycle: Some(POOL_RECYCLE_TIMEOUT),
        };
        self.pool.timeout_get(&now).await.ok()
    }

    /// Opens `n` of the pool's connections now (and leaves them pooled), so that the first
    /// burst of work finds them open.
    pub async fn open_ahead(&self, n: usize) -> anyhow::Result<()> {
        futures::future::try_join_all((0..n).map(|_| self.client())).await?;
        Ok(())
    }

    /// One round trip on a pooled connection (`serve`'s `/healthz`): `true` when the database
    /// answers.
    pub async fn ping(&self) -> bool {
        match self.client().await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }
}

/// A pooled connection in a state no other statement may inherit (a session setting, an open
/// transaction). It goes back to the pool only through [`Held::release`], once that state is
/// undone; dropped before that (an early error return, a panic, a task cut short), it is taken
/// out of the pool and closed.
pub(crate) struct Held(Option<deadpool_postgres::Object>);

impl Held {
    pub(crate) async fn take(db: &Db) -> anyhow::Result<Held> {
        Ok(Held(Some(db.client().await?)))
    }

    pub(crate) fn conn(&self) -> anyhow::Result<&deadpool_postgres::ClientWrapper> {
        self.0
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("the connection was given back to the pool already"))
    }

    /// Its state undone: the connection goes back to the pool.
    pub(crate) fn release(&mut self) {
        drop(self.0.take());
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// tokio-postgres understands `disable`, `prefer` and `require`; libpq's verifying modes are
/// mapped to `require` plus certificate verification here.
fn split_verify_mode(url: &str) -> (String, bool) {
    for mode in ["verify-full", "verify-ca"] {
        let needle = format!("sslmode={mode}");
        if url.contains(&needle) {
            return (url.replace(&needle, "sslmode=require"), true);
        }
    }
    (url.to_string(), false)
}

fn client_tls_config(verify: bool) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions");
    if verify {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth()
    }
}

/// libpq's `sslmode=require`: the channel is encrypted and the handshake signatures are
/// checked, but the certificate chain is not (self-signed server certificates are accepted).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
