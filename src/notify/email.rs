//! Email: SMTP through our own client (`smtp`), or `.eml` files into `EMAIL_OUTBOX_DIR`.
//! lettre builds the message bytes; it does not talk to the relay.
//!
//! A failure is classified by where it happened: before the final `.` of DATA was written
//! nothing can have been delivered (a refusal: 4xx transient, 5xx permanent; a timeout or a
//! lost connection: transient); after it, a lost connection or a timeout is ambiguous. A
//! refused AUTH is our configuration, not the message. Connections are reused through a small
//! pool of idle ones; one that waited longer than [`CHECK_AFTER_IDLE`] is checked with NOOP.
//!
//! Names and subjects are made one printable line (`domain::display_name`) before they become
//! headers: a CR or LF from data never injects a header.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment as LettreAttachment, Mailbox, MultiPart, SinglePart};
use lettre::Message;

use super::smtp::{self, Connection, Failure, Relay, Security, TxError};
use super::{scrub, Gate, SendOutcome};
use crate::config::{ConfigError, EmailSettings, EmailTransport};
use crate::domain::{display_name, EmailAddress};
use crate::secret::Secret;

/// The deadline of each SMTP step unless `SMTP_URL` says `timeout=`.
pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_IDLE: usize = 8;
/// A pooled connection used more recently than this is reused without a NOOP first.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(2);

pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

pub struct OutgoingEmail {
    pub to: EmailAddress,
    pub to_name: Option<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub attachments: Vec<Attachment>,
    /// Full Message-ID including angle brackets, set verbatim.
    pub message_id: String,
    /// The recipient's one-click unsubscribe URL (advertising emails only): sent as
    /// `List-Unsubscribe` with `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
    pub list_unsubscribe: Option<String>,
}

enum Transport {
    Smtp {
        relay: Arc<Relay>,
        idle: Arc<Mutex<Vec<Connection>>>,
    },
    Outbox {
        dir: PathBuf,
    },
}

/// Sends email through the configured transport. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Mailer {
    transport: Arc<Transport>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("transport", &self.describe())
            .finish_non_exhaustive()
    }
}

fn parse_relay(url: &Secret, ca_file: Option<&std::path::Path>) -> Result<Relay, ConfigError> {
    let bad = |why: &str| ConfigError::new(format!("SMTP_URL is not usable: {why}"));
    let u = url::Url::parse(url.expose()).map_err(|_| bad("not a URL"))?;
    let host = match u.host() {
        // Without the brackets of the URL form: this is what the socket resolves.
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let param = |name: &str| {
        u.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_string())
    };
    let tls_param = param("tls");
    let timeout = match param("timeout") {
        None => DEFAULT_SMTP_TIMEOUT,
        Some(t) => match humantime::parse_duration(&t) {
            Ok(d) if !d.is_zero() && d <= Duration::from_secs(3600) => d,
            _ => {
                return Err(bad(&format!(
                    "timeout={t} is not a duration between 1ms and 1h (e.g. timeout=30s)"
                )))
            }
        },
    };
    let security = match (u.scheme(), tls_param.as_deref()) {
        ("smtps", _) => Security::Wrapper,
        ("smtp", Some("required")) => Security::StartTlsRequired,
        ("smtp", Some("opportunistic")) => Security::StartTlsOpportunistic,
        ("smtp", None | Some("none")) => Security::None,
        ("smtp", Some(other)) => {
            return Err(bad(&format!(
                "tls={other} is unknown (use tls=required, tls=opportunistic or tls=none)"
            )))
        }
        (other, _) => return Err(bad(&format!("scheme {other}:// (use smtp:// or smtps://)"))),
    };
    let port = u.port().unwrap_or(match security {
        Security::Wrapper => 465,
        Security::StartTlsRequired | Security::StartTlsOpportunistic => 587,
        Security::None => 25,
    });
    let decode = |s: &str| percent_decode(s);
    let credentials = if u.username().is_empty() {
        None
    } else {
        Some((
            decode(u.username()),
            Secret::new(decode(u.password().unwrap_or(""))),
        ))
    };
    if credentials.is_some() && security == Security::None && tls_param.as_deref() != Some("none") {
        return Err(bad(
            "it has a user and password but no TLS, so the password would cross the network \
             in clear text: use smtps://…:465 or smtp://…:587?tls=required (add tls=none only \
             for a relay on this machine)",
        ));
    }
    Ok(Relay {
        host,
        port,
        security,
        credentials,
        timeout,
        tls: smtp::tls_config(ca_file, security != Security::None).map_err(ConfigError::new)?,
    })
}

/// The user or password of a URL: `%XX` decoded, everything else as written (`+` and `&`
/// included: userinfo is not a form).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl Mailer {
    pub fn from_settings(s: &EmailSettings) -> Result<Mailer, ConfigError> {
        let transport = match s.require_transport()? {
            EmailTransport::Smtp { url, ca_file } => Transport::Smtp {
                relay: Arc::new(parse_relay(url, ca_file.as_deref())?),
                idle: Arc::new(Mutex::new(Vec::new())),
            },
            EmailTransport::Outbox { dir } => Transport::Outbox { dir: dir.clone() },
        };
        let from: Mailbox = s
            .from
            .parse()
            .map_err(|e| ConfigError::new(format!("EMAIL_FROM is not a mailbox: {e}")))?;
        let reply_to =
            match &s.reply_to {
                Some(r) => Some(r.parse().map_err(|e| {
                    ConfigError::new(format!("EMAIL_REPLY_TO is not a mailbox: {e}"))
                })?),
                None => None,
            };
        crate::tls::ensure_tls_provider();
        Ok(Mailer {
            transport: Arc::new(transport),
            from,
            reply_to,
        })
    }

    /// The sender's address (`EMAIL_FROM` without its name): the ORGANIZER of an invite
    /// whose therapist has no address.
    pub fn sender_address(&self) -> String {
        self.from.email.to_string()
    }

    /// Ends the idle SMTP sessions with QUIT, each within the relay's deadline. For the end
    /// of a run; a mailer that is simply dropped closes its sockets without QUIT.
    pub async fn close(&self) {
        if let Transport::Smtp { idle, .. } = &*self.transport {
            let conns: Vec<Connection> =
                std::mem::take(&mut *idle.lock().unwrap_or_else(|p| p.into_inner()));
            futures::future::join_all(conns.into_iter().map(Connection::quit)).await;
        }
    }

    /// Where mail goes, without credentials.
    pub fn describe(&self) -> String {
        match &*self.transport {
            Transport::Smtp { relay, .. } => format!("smtp {}:{}", relay.host, relay.port),
            Transport::Outbox { dir } => format!("outbox {}", dir.display()),
        }
    }

    fn build(&self, msg: &OutgoingEmail) -> Result<Message, String> {
        let to_addr = msg
            .to
            .as_str()
            .parse()
            .map_err(|_| "recipient address is not accepted by the mail library".to_string())?;
        // Header values from data: one printable line each, whatever the caller passed, so
        // a name can never start a header of its own (and the mail library never panics).
        let to = Mailbox::new(display_name::sanitize_opt(msg.to_name.as_deref()), to_addr);
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(display_name::single_line(&msg.subject))
            .message_id(Some(msg.message_id.clone()))
            .date_now();
        if let Some(r) = &self.reply_to {
            b = b.reply_to(r.clone());
        }
        // RFC 3834: no vacation responder or auto-reply should answer these.
        b = b.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_string(),
        ));
        if let Some(url) = &msg.list_unsubscribe {
            let by_reply = url.starts_with("mailto:");
            if !url.starts_with("https://") && !url.starts_with("http://") && !by_reply
                || url
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '>')
            {
                return Err("the unsubscribe link is not a plain http(s) URL".to_string());
            }
            b = b.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{url}>"),
            ));
            // RFC 8058: one-click is a promise of an HTTPS endpoint, never made for a mailto.
            if !by_reply {
                b = b.raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_string(),
                ));
            }
        }
        let alternative = MultiPart::alternative()
            .singlepart(SinglePart::plain(msg.text.clone()))
            .singlepart(SinglePart::html(msg.html.clone()));
        let body = if msg.attachments.is_empty() {
            alternative
        } else {
            let mut mixed = MultiPart::mixed().multipart(alternative);
            for a in &msg.attachments {
                let ct = ContentType::parse(&a.content_type)
                    .map_err(|_| format!("invalid content type {:?}", a.content_type))?;
                mixed = mixed
                    .singlepart(LettreAttachment::new(a.filename.clone()).body(a.body.clone(), ct));
            }
            mixed
        };
        b.multipart(body)
            .map_err(|e| format!("cannot build the message: {e}"))
    }

    pub async fn send(&self, msg: &OutgoingEmail) -> SendOutcome {
        let sent = self.send_gated(msg, super::open_gate()).await;
        // An open gate holds nothing back.
        sent.unwrap_or_else(held_back)
    }

    /// [`Mailer::send`], handing the message over only once `gate` allows (`None`: it did
    /// not, and the relay cannot have the message).
    pub async fn send_gated(&self, msg: &OutgoingEmail, gate: Gate) -> Option<SendOutcome> {
        let message = match self.build(msg) {
            Ok(m) => m,
            Err(reason) => return Some(SendOutcome::Permanent { reason }),
        };
        match &*self.transport {
            Transport::Outbox { dir } => match gate.await {
                true => Some(write_eml(dir, &msg.message_id, &message.formatted()).await),
                false => None,
            },
            Transport::Smtp { relay, idle } => {
                let envelope = message.envelope();
                let from = envelope.from().map(|a| a.to_string());
                let to: Vec<String> = envelope.to().iter().map(|a| a.to_string()).collect();
                send_smtp(
                    relay,
                    idle,
                    from.as_deref(),
                    &to,
                    &message.formatted(),
                    gate,
                )
                .await
            }
        }
    }
}

/// One message over a pooled or new connection, the body written only once `gate` allows
/// (`None`: it did not). A reused connection that turns out to be closed before MAIL was
/// answered is replaced once: nothing was sent on it.
async fn send_smtp(
    relay: &Relay,
    idle: &Mutex<Vec<Connection>>,
    from: Option<&str>,
    to: &[String],
    raw: &[u8],
    gate: Gate,
) -> Option<SendOutcome> {
    let mut pooled = checkout(idle).await;
    let mut gate = Some(gate);
    loop {
        let reused = pooled.is_some();
        let mut conn = match pooled.take() {
            Some(c) => c,
            None => match smtp::connect(relay).await {
                Ok(c) => c,
                Err(f) => return Some(connect_failed(relay, &f)),
            },
        };
        let result = conn.transaction(from, to, raw, &mut gate).await;
        match &result {
            Err(TxError::BeforeDot(f)) if reused && stale(f) => continue,
            Err(TxError::Held) => {
                if conn.reset().await.is_ok() {
                    checkin(idle, conn);
                }
                return None;
            }
            Ok(_) => checkin(idle, conn),
            Err(TxError::BeforeDot(f) | TxError::AfterDot(f)) if f.peer_answered() => {
                // The relay is alive and said no: forget the transaction, keep the session.
                if conn.reset().await.is_ok() {
                    checkin(idle, conn);
                }
            }
            // A relay that stopped answering gets no QUIT: the socket is just dropped.
            Err(_) => drop(conn),
        }
        return Some(outcome(result));
    }
}

/// A pooled connection closed by the relay while idle (not one that stopped answering).
fn stale(f: &Failure) -> bool {
    match f {
        Failure::Io { step, .. } => *step == "MAIL FROM",
        Failure::Refused { step, reply } => *step == "MAIL FROM" && reply.code == 421,
        _ => false,
    }
}

/// An idle connection, checked with NOOP if it waited long enough for the relay to drop it.
async fn checkout(idle: &Mutex<Vec<Connection>>) -> Option<Connection> {
    loop {
        let mut conn = idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        if conn.idle_for() < CHECK_AFTER_IDLE {
            return Some(conn);
        }
        match conn.noop().await {
            Ok(()) => return Some(conn),
            Err(f) => log::debug!("dropping an idle SMTP connection: {}", f.describe()),
        }
    }
}

fn checkin(idle: &Mutex<Vec<Connection>>, conn: Connection) {
    let mut pool = idle.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < MAX_IDLE {
        pool.push(conn);
    }
}

fn connect_failed(relay: &Relay, f: &Failure) -> SendOutcome {
    match f.misconfigured_setting() {
        Some(setting) => SendOutcome::Misconfigured {
            setting,
            reason: format!("{} ({}:{})", f.describe(), relay.host, relay.port),
        },
        None => SendOutcome::Transient {
            reason: format!(
                "cannot connect to {}:{}: {}",
                relay.host,
                relay.port,
                f.describe()
            ),
        },
    }
}

/// The rule: a refusal is the relay's verdict; silence or a lost connection before the final
/// `.` is retryable, after it ambiguous.
fn outcome(result: Result<smtp::Reply, TxError>) -> SendOutcome {
    let refusal = |f: &Failure| match f {
        Failure::Refused { reply, .. } if reply.is_permanent() => SendOutcome::Permanent {
            reason: f.describe(),
        },
        _ => SendOutcome::Transient {
            reason: f.describe(),
        },
    };
    match result {
        Ok(reply) => SendOutcome::Sent {
            provider_id: reply.lines.join(" ").split_whitespace().last().map(scrub),
        },
        Err(TxError::BeforeDot(f)) => refusal(&f),
        // `send_smtp` answers a held message itself.
        Err(TxError::Held) => held_back(),
        Err(TxError::AfterDot(f)) if f.peer_answered() => refusal(&f),
        Err(TxError::AfterDot(f)) => SendOutcome::Ambiguous {
            reason: format!(
                "no answer after the whole message was sent: {}",
                f.describe()
            ),
        },
    }
}

/// A message the gate held back, where an outcome is needed anyway: nothing went out, so it
/// is tried again later.
fn held_back() -> SendOutcome {
    SendOutcome::Transient {
        reason: "not handed to the relay: held back before the body".into(),
    }
}

/// Writes one message as an `.eml` file, atomically (temporary file, then rename).
async fn write_eml(dir: &std::path::Path, message_id: &str, bytes: &[u8]) -> SendOutcome {
    let name: String = message_id
        .trim_matches(|c| c == '<' || c == '>')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let file = format!("{name}.eml");
    let result = async {
        tokio::fs::create_dir_all(dir).await?;
        let tmp = dir.join(format!(".{file}.tmp"));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, dir.join(&file)).await
    }
    .await;
    match result {
        Ok(()) => SendOutcome::Sent {
            provider_id: Some(file),
        },
        Err(e) => SendOutcome::Transient {
            reason: format!("cannot write to the outbox {}: {e}", dir.display()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox_mailer() -> Mailer {
        Mailer::from_settings(&EmailSettings {
            transport: Some(EmailTransport::Outbox {
                dir: std::env::temp_dir(),
            }),
            from: "Praxisteam <termine@praxis.example>".into(),
            reply_to: None,
        })
        .unwrap()
    }

    #[test]
    fn the_smtp_url_sets_the_step_deadline_and_a_bad_one_is_refused_without_the_password() {
        let relay = |u: &str| parse_relay(&Secret::new(u), None);
        let default = relay("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(default.timeout, DEFAULT_SMTP_TIMEOUT);
        let short = relay("smtps://u:geheim@smtp.example?timeout=1500ms").unwrap();
        assert_eq!(short.timeout, Duration::from_millis(1500));
        assert_eq!((short.port, short.security), (465, Security::Wrapper));
        let v6 = relay("smtp://[::1]:2525?tls=required&timeout=5s").unwrap();
        assert_eq!(v6.host, "::1");
        for bad in ["0s", "soon", "2h"] {
            let url = format!("smtp://u:geheim@smtp.example:587?timeout={bad}");
            let Err(e) = relay(&url) else {
                panic!("timeout={bad} accepted")
            };
            let e = e.to_string();
            assert!(e.contains("timeout=") && !e.contains("geheim"), "{e}");
        }
    }

    #[test]
    fn a_name_or_subject_with_line_breaks_builds_one_header_each() {
        let msg = OutgoingEmail {
            to: EmailAddress::parse("anna@example.de").unwrap(),
            to_name: Some("Anna\r\nBcc: evil@example.org\u{0}".into()),
            subject: "Termin\r\nBcc: evil@example.org".into(),
            text: "Text".into(),
            html: "<p>Text</p>".into(),
            attachments: vec![],
            message_id: "<1@praxis.example>".into(),
            list_unsubscribe: None,
        };
        let built = outbox_mailer().build(&msg).expect("builds");
        assert_eq!(built.envelope().to().len(), 1);
        let raw = String::from_utf8(built.formatted()).unwrap();
        let head = raw.split("\r\n\r\n").next().unwrap();
        for line in head.split("\r\n") {
            assert!(!line.to_ascii_lowercase().starts_with("bcc:"), "{head}");
        }
        assert!(!head.contains('\0'));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn any_name_and_subject_build_a_message_with_one_recipient(
            name in proptest::prelude::any::<String>(),
            subject in proptest::prelude::any::<String>(),
        ) {
            let msg = OutgoingEmail {
                to: EmailAddress::parse("anna@example.de").unwrap(),
                to_name: Some(name),
                subject,
                text: "Text".into(),
                html: "<p>Text</p>".into(),
                attachments: vec![],
                message_id: "<1@praxis.example>".into(),
                list_unsubscribe: None,
            };
            let built = outbox_mailer().build(&msg).expect("builds");
            proptest::prop_assert_eq!(built.envelope().to().len(), 1);
            let raw = String::from_utf8_lossy(&built.formatted()).into_owned();
            let head = raw.split("\r\n\r\n").next().unwrap_or_default().to_string();
            let to_lines = head
                .split("\r\n")
                .filter(|l| l.to_ascii_lowercase().starts_with("to:"))
                .count();
            proptest::prop_assert_eq!(to_lines, 1);
            proptest::prop_assert!(!head.to_ascii_lowercase().contains("\r\nbcc:"));
        }
    }
}
