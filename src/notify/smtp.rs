//! Our own small SMTP client: one TCP socket we connect ourselves (TCP_NODELAY), optional
//! implicit TLS or STARTTLS on it, AUTH PLAIN/LOGIN, and MAIL/RCPT/DATA with dot-stuffing
//! (the envelope pipelined when the relay offers PIPELINING).
//!
//! Every step has the relay's deadline (`SMTP_URL`'s `timeout=`, default 30 s): the TCP
//! connect, the TLS handshake, the greeting, EHLO, STARTTLS, AUTH, NOOP, each command of a
//! transaction, each chunk of the body, the reply to the final `.` and QUIT. A step that
//! misses its deadline leaves the connection unusable: the caller drops it and never sends
//! QUIT into a peer that stopped answering.
//!
//! A failed transaction says whether the final `.` had been written ([`TxError::AfterDot`]):
//! before that the relay cannot have accepted the message.
//!
//! TLS always verifies the relay's certificate and host name, against the public roots, the
//! system's store and `SMTP_CA_FILE` ([`tls_config`]); a certificate that fails is the
//! operator's to fix ([`Failure::UntrustedCertificate`]), never retried as if the relay were
//! busy. The password is only sent over TLS, or in clear text when `SMTP_URL` says
//! `tls=none` (a relay on this machine).
//!
//! This module builds no messages (lettre does) and knows nothing of bookings; its failures
//! never carry the password nor an address (texts from the relay go through [`super::scrub`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{scrub, Gate};
use crate::secret::Secret;

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Security {
    /// `smtps://`: TLS from the first byte.
    Wrapper,
    /// `smtp://…?tls=required`: STARTTLS or fail.
    StartTlsRequired,
    /// `smtp://…?tls=opportunistic`: STARTTLS when offered.
    StartTlsOpportunistic,
    /// `smtp://host:port`: plain text (local relays only). With credentials only when the
    /// URL says `tls=none` explicitly.
    None,
}

/// Where and how to connect. Built once per process from `SMTP_URL`.
pub(super) struct Relay {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub credentials: Option<(String, Secret)>,
    /// The deadline of every single step.
    pub timeout: Duration,
    /// Roots and settings for the relay's certificate (implicit TLS and STARTTLS).
    pub tls: Arc<rustls::ClientConfig>,
}

/// The TLS settings for a relay: hostname verification always on (there is no switch to turn
/// it off), and as roots the public web roots, the machine's own store (so a company CA the
/// machine already trusts works without settings) and the PEM bundle `ca_file`
/// (`SMTP_CA_FILE`). A bundle that cannot be read or holds no usable CA is an error naming
/// the setting; the machine's store is best effort (a missing or partly unreadable store
/// leaves the other roots). Reading the store costs tens of milliseconds, so a relay that
/// never speaks TLS (`system_store` false) skips it.
pub(super) fn tls_config(
    ca_file: Option<&Path>,
    system_store: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if system_store {
        let system = rustls_native_certs::load_native_certs();
        let (added, ignored) = roots.add_parsable_certificates(system.certs);
        log::debug!(
            "SMTP TLS roots: {added} from the system store ({ignored} unusable, {} errors \
             reading it)",
            system.errors.len()
        );
    }
    if let Some(path) = ca_file {
        let added = add_ca_file(&mut roots, path)?;
        log::debug!(
            "SMTP TLS roots: {added} from SMTP_CA_FILE {}",
            path.display()
        );
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS for SMTP cannot be set up: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Adds every certificate of the PEM bundle at `path` as a root; how many.
fn add_ca_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<usize, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |why: String| format!("SMTP_CA_FILE={} {why}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| match e {
            rustls::pki_types::pem::Error::Io(e) => bad(format!("cannot be read: {e}")),
            other => bad(format!("is not a PEM bundle: {other}")),
        })?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate: expected the CA's certificate in PEM form \
             (-----BEGIN CERTIFICATE-----)"
                .into(),
        ));
    }
    let count = certs.len();
    for (n, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| bad(format!("certificate {} is not usable as a CA: {e}", n + 1)))?;
    }
    Ok(count)
}

/// One reply of the relay: its code and the text of all its lines.
#[derive(Debug)]
pub(super) struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// `451 4.3.0 try again later` (all lines joined, addresses masked).
    pub(super) fn text(&self) -> String {
        scrub(&format!("{} {}", self.code, self.lines.join(" ")))
    }
    pub(super) fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

/// Why a step failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// No answer (or no progress writing) within the deadline.
    Timeout { step: &'static str },
    /// The connection failed: refused, reset, closed, TLS, unreadable reply.
    Io { step: &'static str, reason: String },
    /// The relay answered with a refusal.
    Refused { step: &'static str, reply: Reply },
    /// AUTH was refused (535 and the like): our credentials, not the message.
    AuthRejected { user: String, reply: Reply },
    /// Credentials are configured but the relay offers neither AUTH PLAIN nor LOGIN.
    NoAuthMechanism { user: String },
    /// `tls=required` and the relay does not offer STARTTLS.
    NoStartTls,
    /// The relay's certificate failed verification: an unknown CA, another host's name,
    /// expired. Our trust settings (or the host in `SMTP_URL`), not the message.
    UntrustedCertificate {
        host: String,
        error: rustls::CertificateError,
    },
    /// Credentials are configured, `tls=opportunistic`, and the relay offers no STARTTLS:
    /// AUTH would send the password in clear text, so it is not sent.
    PlaintextAuth { user: String },
}

impl Failure {
    /// Whether the relay answered (so the connection still speaks SMTP).
    pub(super) fn peer_answered(&self) -> bool {
        matches!(self, Failure::Refused { .. })
    }

    /// For a reason string: names the step, never the password or an address.
    pub(super) fn describe(&self) -> String {
        match self {
            Failure::Timeout { step } => format!("{step}: the relay did not answer in time"),
            Failure::Io { step, reason } => format!("{step}: {}", scrub(reason)),
            Failure::Refused { step, reply } => format!("{step}: {}", reply.text()),
            Failure::AuthRejected { user, reply } => {
                format!(
                    "SMTP authentication failed for user {user}: {}",
                    reply.text()
                )
            }
            Failure::NoAuthMechanism { user } => format!(
                "SMTP authentication failed for user {user}: the relay offers neither AUTH PLAIN \
                 nor AUTH LOGIN"
            ),
            Failure::NoStartTls => {
                "the relay does not offer STARTTLS, but SMTP_URL says tls=required".into()
            }
            Failure::UntrustedCertificate { host, error } => {
                let why = match error {
                    rustls::CertificateError::NotValidForName => format!(
                        "it was not issued for {host}; put the name it was issued for into \
                         SMTP_URL"
                    ),
                    rustls::CertificateError::NotValidForNameContext { presented, .. } => {
                        format!(
                            "it was not issued for {host} but for {}; put that name into \
                             SMTP_URL",
                            scrub(&presented.join(", "))
                        )
                    }
                    rustls::CertificateError::UnknownIssuer => {
                        "it is signed by a CA this machine does not trust (UnknownIssuer)".into()
                    }
                    other => format!("{other}"),
                };
                format!("the relay's certificate is not trusted (set SMTP_CA_FILE): {why}")
            }
            Failure::PlaintextAuth { user } => format!(
                "the relay does not offer STARTTLS, so AUTH as {user} would send the password \
                 in clear text; use tls=required (or smtps://), or tls=none only for a relay on \
                 this machine"
            ),
        }
    }

    /// The setting an operator has to fix when this failure is our configuration rather
    /// than the message or the relay's mood; `None` for everything worth retrying as it is.
    pub(super) fn misconfigured_setting(&self) -> Option<&'static str> {
        match self {
            Failure::AuthRejected { .. }
            | Failure::NoAuthMechanism { .. }
            | Failure::NoStartTls
            | Failure::PlaintextAuth { .. } => Some("SMTP_URL"),
            Failure::UntrustedCertificate { error, .. } => match error {
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => Some("SMTP_URL"),
                _ => Some("SMTP_CA_FILE"),
            },
            Failure::Timeout { .. } | Failure::Io { .. } | Failure::Refused { .. } => None,
        }
    }
}

/// A failed transaction: before or after the final `.` was written.
#[derive(Debug)]
pub(super) enum TxError {
    /// The relay cannot have accepted the message.
    BeforeDot(Failure),
    /// The whole message went out; the relay's verdict is unknown unless it answered.
    AfterDot(Failure),
    /// The caller's gate said no before the body: the relay cannot have the message.
    Held,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Longest reply line we read; a relay sending more is broken.
const MAX_LINE: u64 = 4096;
/// The body is written in chunks, each with its own deadline: a large message on a slow
/// link makes progress, a relay that stopped reading is caught.
const BODY_CHUNK: usize = 64 * 1024;

/// One SMTP session, after greeting, EHLO, STARTTLS and AUTH.
pub(super) struct Connection {
    io: BufReader<Box<dyn Io>>,
    timeout: Duration,
    extensions: Vec<String>,
    last_used: Instant,
    /// Out of step with the relay (a pipelined reply never came, or the relay opened DATA
    /// after refusing part of the envelope): never reused, not even for RSET.
    out_of_step: bool,
}

async fn within<T>(
    timeout: Duration,
    step: &'static str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Io {
            step,
            reason: e.to_string(),
        }),
        Err(_) => Err(Failure::Timeout { step }),
    }
}

/// Connects, reads the greeting, says EHLO, upgrades to TLS and authenticates as `relay`
/// asks: every step within `relay.timeout`.
pub(super) async fn connect(relay: &Relay) -> Result<Connection, Failure> {
    let tcp = within(
        relay.timeout,
        "connect",
        TcpStream::connect((relay.host.as_str(), relay.port)),
    )
    .await?;
    // Without it every message waits for the relay's delayed ACK of the body.
    tcp.set_nodelay(true).map_err(|e| Failure::Io {
        step: "connect",
        reason: e.to_string(),
    })?;
    let io: Box<dyn Io> = match relay.security {
        Security::Wrapper => Box::new(handshake(relay, Box::new(tcp)).await?),
        _ => Box::new(tcp),
    };
    let mut conn = Connection {
        io: BufReader::new(io),
        timeout: relay.timeout,
        extensions: Vec::new(),
        last_used: Instant::now(),
        out_of_step: false,
    };
    conn.expect_reply("greeting").await?;
    conn.ehlo().await?;
    let starttls = match relay.security {
        Security::StartTlsRequired if !conn.offers("STARTTLS") => return Err(Failure::NoStartTls),
        Security::StartTlsRequired => true,
        Security::StartTlsOpportunistic => conn.offers("STARTTLS"),
        Security::Wrapper | Security::None => false,
    };
    if starttls {
        conn.command("STARTTLS", "STARTTLS").await?;
        // The relay sends nothing more before the handshake, so nothing is buffered.
        let plain = conn.io.into_inner();
        conn.io = BufReader::new(Box::new(handshake(relay, plain).await?));
        conn.ehlo().await?;
    }
    if let Some((user, password)) = &relay.credentials {
        // `tls=none` is the operator's explicit word for a relay on this machine; anything
        // else that ended up without TLS keeps the password to itself.
        let encrypted = starttls || relay.security == Security::Wrapper;
        if !encrypted && relay.security != Security::None {
            return Err(Failure::PlaintextAuth { user: user.clone() });
        }
        conn.auth(user, password).await?;
    }
    Ok(conn)
}

async fn handshake(
    relay: &Relay,
    io: Box<dyn Io>,
) -> Result<tokio_rustls::client::TlsStream<Box<dyn Io>>, Failure> {
    let name =
        rustls::pki_types::ServerName::try_from(relay.host.clone()).map_err(|_| Failure::Io {
            step: "TLS handshake",
            reason: format!("{:?} is not a valid TLS server name", relay.host),
        })?;
    let connector = tokio_rustls::TlsConnector::from(relay.tls.clone());
    match tokio::time::timeout(relay.timeout, connector.connect(name, io)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(match certificate_error(&e) {
            Some(error) => Failure::UntrustedCertificate {
                host: relay.host.clone(),
                error,
            },
            None => Failure::Io {
                step: "TLS handshake",
                reason: e.to_string(),
            },
        }),
        Err(_) => Err(Failure::Timeout {
            step: "TLS handshake",
        }),
    }
}

/// The verification failure inside a failed handshake, if that is what it was.
fn certificate_error(e: &std::io::Error) -> Option<rustls::CertificateError> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(c) => Some(c.clone()),
        _ => None,
    }
}

impl Connection {
    /// Since when this connection has been waiting in the pool.
    pub(super) fn idle_for(&self) -> Duration {
        self.last_used.elapsed()
    }

    fn offers(&self, keyword: &str) -> bool {
        self.extensions
            .iter()
            .any(|e| e.split_whitespace().next() == Some(keyword))
    }

    async fn read_reply(&mut self, step: &'static str) -> Result<Reply, Failure> {
        let io = &mut self.io;
        let read = async move {
            let mut lines = Vec::new();
            loop {
                let mut raw = Vec::new();
                io.take(MAX_LINE).read_until(b'\n', &mut raw).await?;
                if !raw.ends_with(b"\n") {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the relay closed the connection",
                    ));
                }
                let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
                let (Some(code), sep) = (code, line.as_bytes().get(3).copied()) else {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the relay's reply is not SMTP",
                    ));
                };
                lines.push(line.get(4..).unwrap_or("").to_string());
                if sep != Some(b'-') {
                    return Ok(Reply { code, lines });
                }
            }
        };
        within(self.timeout, step, read).await
    }

    /// Reads a reply and turns a 4xx/5xx into [`Failure::Refused`].
    async fn expect_reply(&mut self, step: &'static str) -> Result<Reply, Failure> {
        let reply = self.read_reply(step).await?;
        if reply.code >= 400 {
            return Err(Failure::Refused { step, reply });
        }
        Ok(reply)
    }

    async fn write(&mut self, step: &'static str, bytes: &[u8]) -> Result<(), Failure> {
        let io = self.io.get_mut();
        within(self.timeout, step, async move {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
    }

    /// One command line and its reply, each within the deadline.
    async fn command(&mut self, step: &'static str, line: &str) -> Result<Reply, Failure> {
        self.write(step, format!("{line}\r\n").as_bytes()).await?;
        self.expect_reply(step).await
    }

    async fn ehlo(&mut self) -> Result<(), Failure> {
        let client = lettre::transport::smtp::extension::ClientId::default().to_string();
        let reply = self.command("EHLO", &format!("EHLO {client}")).await?;
        self.extensions = reply
            .lines
            .iter()
            .skip(1)
            .map(|l| l.to_ascii_uppercase())
            .collect();
        Ok(())
    }

    async fn auth(&mut self, user: &str, password: &Secret) -> Result<(), Failure> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mechanisms: Vec<String> = self
            .extensions
            .iter()
            .filter_map(|e| e.strip_prefix("AUTH"))
            .flat_map(|m| m.split_whitespace().map(str::to_string))
            .collect();
        let result = if mechanisms.iter().any(|m| m == "PLAIN") {
            let token = b64(&format!("\0{user}\0{}", password.expose()));
            self.command("AUTH", &format!("AUTH PLAIN {token}")).await
        } else if mechanisms.iter().any(|m| m == "LOGIN") {
            async {
                self.command("AUTH", "AUTH LOGIN").await?;
                self.command("AUTH", &b64(user)).await?;
                self.command("AUTH", &b64(password.expose())).await
            }
            .await
        } else {
            return Err(Failure::NoAuthMechanism { user: user.into() });
        };
        match result {
            Ok(_) => Ok(()),
            Err(Failure::Refused { reply, .. }) if reply.is_permanent() => {
                Err(Failure::AuthRejected {
                    user: user.into(),
                    reply,
                })
            }
            Err(other) => Err(other),
        }
    }

    /// Checks that a pooled connection still answers.
    pub(super) async fn noop(&mut self) -> Result<(), Failure> {
        self.command("NOOP", "NOOP").await.map(|_| ())
    }

    /// Forgets a failed transaction so the connection can be reused.
    pub(super) async fn reset(&mut self) -> Result<(), Failure> {
        if self.out_of_step {
            return Err(Failure::Io {
                step: "RSET",
                reason: "the session is out of step with the relay".into(),
            });
        }
        self.command("RSET", "RSET").await.map(|_| ())
    }

    /// Ends the session politely. Only for a relay that is still answering.
    pub(super) async fn quit(mut self) {
        if let Err(e) = self.command("QUIT", "QUIT").await {
            log::debug!("QUIT: {}", e.describe());
        }
    }

    /// One message: MAIL, RCPT for each recipient, DATA, the dot-stuffed body and the final
    /// `.`; returns the relay's reply to it. `gate` (taken when awaited) is awaited before
    /// the body (pipelined: after the relay's 354; else before DATA): when it says no,
    /// [`TxError::Held`], and a session left inside DATA is marked out of step.
    pub(super) async fn transaction(
        &mut self,
        from: Option<&str>,
        to: &[String],
        message: &[u8],
        gate: &mut Option<Gate>,
    ) -> Result<Reply, TxError> {
        let before = TxError::BeforeDot;
        if self.offers("PIPELINING") {
            self.envelope_pipelined(from, to).await.map_err(before)?;
            if !passes(gate).await {
                // Inside DATA: only the final `.` ends it, and that would send the message.
                self.out_of_step = true;
                return Err(TxError::Held);
            }
        } else {
            self.command("MAIL FROM", &format!("MAIL FROM:<{}>", from.unwrap_or("")))
                .await
                .map_err(before)?;
            for rcpt in to {
                self.command("RCPT TO", &format!("RCPT TO:<{rcpt}>"))
                    .await
                    .map_err(before)?;
            }
            if !passes(gate).await {
                return Err(TxError::Held);
            }
            self.command("DATA", "DATA").await.map_err(before)?;
        }
        let body = dot_stuffed(message);
        for chunk in body.chunks(BODY_CHUNK) {
            self.write("message body", chunk).await.map_err(before)?;
        }
        // The final `.` is out: from here on the relay may have taken the message.
        let reply = self
            .expect_reply("end of DATA")
            .await
            .map_err(TxError::AfterDot)?;
        self.last_used = Instant::now();
        Ok(reply)
    }

    /// The envelope as RFC 2920 allows when the relay offers PIPELINING: MAIL, each RCPT and
    /// DATA in one write, then their replies in order. One round trip instead of two or more
    /// per message. Every reply is read, so the session stays in step; the first refusal is
    /// the answer. A relay that opens DATA although it refused part of the envelope gets no
    /// body (ending DATA would deliver to the recipients it accepted): the session is marked
    /// out of step and dropped by the caller.
    async fn envelope_pipelined(
        &mut self,
        from: Option<&str>,
        to: &[String],
    ) -> Result<(), Failure> {
        let mut lines = format!("MAIL FROM:<{}>\r\n", from.unwrap_or(""));
        for rcpt in to {
            lines.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
        }
        lines.push_str("DATA\r\n");
        // Named for its first command: a pooled session the relay closed fails here, and the
        // caller retries that on a new one (`email::stale`).
        self.write("MAIL FROM", lines.as_bytes()).await?;
        let steps = std::iter::once("MAIL FROM")
            .chain(to.iter().map(|_| "RCPT TO"))
            .chain(std::iter::once("DATA"));
        let mut refused = None;
        for step in steps {
            let reply = match self.read_reply(step).await {
                Ok(reply) => reply,
                Err(lost) => {
                    self.out_of_step = true;
                    return Err(refused.unwrap_or(lost));
                }
            };
            match (reply.code >= 400, &refused) {
                (true, None) => refused = Some(Failure::Refused { step, reply }),
                (false, Some(_)) if step == "DATA" => self.out_of_step = true,
                _ => {}
            }
        }
        refused.map_or(Ok(()), Err)
    }
}

/// Waits for `gate` and answers whether it lets the message out. A gate is awaited once:
/// one already taken had let it out (a no ends the transaction).
async fn passes(gate: &mut Option<Gate>) -> bool {
    match gate.take() {
        Some(gate) => gate.await,
        None => true,
    }
}

/// The DATA payload: lines starting with `.` get another one, the message ends with CRLF,
/// then `.` CRLF.
fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay on a local socket that offers PIPELINING and accepts everything; once the
    /// client goes away it answers with every line it received after DATA.
    async fn relay_after_data() -> (Relay, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 relay.test\r\n").await.unwrap();
            let mut after_data = Vec::new();
            let mut in_data = false;
            while let Ok(Some(line)) = lines.next_line().await {
                let reply: &[u8] = match line.get(..4).unwrap_or("") {
                    _ if in_data && line == "." => {
                        in_data = false;
                        after_data.push(line);
                        b"250 queued as 4QX1\r\n"
                    }
                    _ if in_data => {
                        after_data.push(line);
                        continue;
                    }
                    "EHLO" => b"250-relay.test\r\n250 PIPELINING\r\n",
                    "DATA" => {
                        in_data = true;
                        b"354 go ahead\r\n"
                    }
                    _ => b"250 ok\r\n",
                };
                write.write_all(reply).await.unwrap();
            }
            after_data
        });
        let relay = Relay {
            host: "127.0.0.1".into(),
            port,
            security: Security::None,
            credentials: None,
            timeout: Duration::from_secs(5),
            tls: tls_config(None, false).unwrap(),
        };
        (relay, peer)
    }

    /// One message through [`relay_after_data`] with a gate already decided: the
    /// transaction's result, the session, and what the relay got after DATA.
    async fn through_gate(
        open: bool,
    ) -> (
        Result<Reply, TxError>,
        Connection,
        tokio::task::JoinHandle<Vec<String>>,
    ) {
        let (relay, peer) = relay_after_data().await;
        let mut conn = connect(&relay).await.unwrap();
        let mut gate: Option<Gate> = Some(Box::pin(std::future::ready(open)));
        let to = ["patient@example.de".to_string()];
        let message = b"Subject: x\r\n\r\nText\r\n";
        let result = conn
            .transaction(Some("praxis@example.de"), &to, message, &mut gate)
            .await;
        (result, conn, peer)
    }

    #[tokio::test]
    async fn a_gate_that_says_no_after_the_pipelined_envelope_sends_no_body_and_spoils_the_session()
    {
        let (result, mut conn, peer) = through_gate(false).await;
        assert!(matches!(result, Err(TxError::Held)), "{result:?}");
        // Inside DATA only the final `.` gets out, and it would send the message: no RSET.
        assert!(conn.reset().await.is_err());
        drop(conn);
        let after_data = peer.await.unwrap();
        assert!(
            after_data.is_empty(),
            "the relay got a body: {after_data:?}"
        );
    }

    #[tokio::test]
    async fn a_gate_that_says_yes_lets_the_body_and_the_final_dot_out() {
        let (result, conn, peer) = through_gate(true).await;
        assert!(result.is_ok(), "{result:?}");
        drop(conn);
        assert_eq!(peer.await.unwrap(), ["Subject: x", "", "Text", "."]);
    }

    #[test]
    fn lines_starting_with_a_dot_are_doubled_and_the_body_ends_with_the_final_dot() {
        assert_eq!(
            dot_stuffed(b".hidden\r\nText\r\n.\r\n..zwei"),
            b"..hidden\r\nText\r\n..\r\n...zwei\r\n.\r\n".to_vec()
        );
        assert_eq!(dot_stuffed(b"Text\r\n"), b"Text\r\n.\r\n".to_vec());
    }
}
