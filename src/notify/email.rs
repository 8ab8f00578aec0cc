//! Email: SMTP through lettre, or `.eml` files into `EMAIL_OUTBOX_DIR`.
//!
//! SMTP transactions are driven command by command (MAIL, RCPT, DATA, message) on lettre's
//! connection type, so a failure can be classified by where it happened: before the message
//! body went out nothing was delivered (4xx transient, 5xx permanent); once the body has been
//! sent, a lost connection or a timeout is ambiguous. Connections are reused through a small
//! pool of idle ones, checked with NOOP before reuse.
//!
//! Names and subjects are made one printable line (`domain::display_name`) before they become
//! headers: a CR or LF from data never injects a header.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment as LettreAttachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;

use super::{scrub, SendOutcome};
use crate::config::{ConfigError, EmailSettings, EmailTransport};
use crate::domain::{display_name, EmailAddress};
use crate::secret::Secret;

const TIMEOUT: Duration = Duration::from_secs(30);
const MAX_IDLE: usize = 8;

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Security {
    /// `smtps://`: TLS from the first byte.
    Wrapper,
    /// `smtp://…?tls=required`: STARTTLS or fail.
    StartTlsRequired,
    /// `smtp://…?tls=opportunistic`: STARTTLS when offered.
    StartTlsOpportunistic,
    /// `smtp://host:port`: plain text (local relays only).
    None,
}

struct Relay {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<(String, Secret)>,
}

enum Transport {
    Smtp {
        relay: Arc<Relay>,
        idle: Arc<Mutex<Vec<AsyncSmtpConnection>>>,
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

fn parse_relay(url: &Secret) -> Result<Relay, ConfigError> {
    let bad = |why: &str| ConfigError::new(format!("SMTP_URL is not usable: {why}"));
    let u = url::Url::parse(url.expose()).map_err(|_| bad("not a URL"))?;
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    let tls_param = u
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.to_string());
    let security = match (u.scheme(), tls_param.as_deref()) {
        ("smtps", _) => Security::Wrapper,
        ("smtp", Some("required")) => Security::StartTlsRequired,
        ("smtp", Some("opportunistic")) => Security::StartTlsOpportunistic,
        ("smtp", None | Some("none")) => Security::None,
        ("smtp", Some(other)) => {
            return Err(bad(&format!(
                "tls={other} is unknown (use tls=required or tls=opportunistic)"
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
    Ok(Relay {
        host: host.to_string(),
        port,
        security,
        credentials,
    })
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl Mailer {
    pub fn from_settings(s: &EmailSettings) -> Result<Mailer, ConfigError> {
        let transport = match s.require_transport()? {
            EmailTransport::Smtp { url } => Transport::Smtp {
                relay: Arc::new(parse_relay(url)?),
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
        crate::ensure_tls_provider();
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
        let message = match self.build(msg) {
            Ok(m) => m,
            Err(reason) => return SendOutcome::Permanent { reason },
        };
        match &*self.transport {
            Transport::Outbox { dir } => {
                write_eml(dir, &msg.message_id, &message.formatted()).await
            }
            Transport::Smtp { relay, idle } => {
                let envelope = message.envelope().clone();
                let raw = message.formatted();
                let mut conn = match self.checkout(relay, idle).await {
                    Ok(c) => c,
                    Err(e) => {
                        return SendOutcome::Transient {
                            reason: format!(
                                "cannot connect to {}:{}: {}",
                                relay.host,
                                relay.port,
                                scrub(&e.to_string())
                            ),
                        }
                    }
                };
                let outcome = transaction(&mut conn, &envelope, &raw).await;
                if matches!(outcome, SendOutcome::Sent { .. }) && !conn.has_broken() {
                    let mut pool = idle.lock().unwrap_or_else(|p| p.into_inner());
                    if pool.len() < MAX_IDLE {
                        pool.push(conn);
                    }
                } else {
                    conn.abort().await;
                }
                outcome
            }
        }
    }

    async fn checkout(
        &self,
        relay: &Relay,
        idle: &Mutex<Vec<AsyncSmtpConnection>>,
    ) -> Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
        loop {
            let candidate = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match candidate {
                Some(mut c) => {
                    if c.test_connected().await {
                        return Ok(c);
                    }
                    c.abort().await;
                }
                None => break,
            }
        }
        connect(relay).await
    }
}

async fn connect(relay: &Relay) -> Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
    let hello = ClientId::default();
    let tls = || TlsParameters::new(relay.host.clone());
    let wrapper = match relay.security {
        Security::Wrapper => Some(tls()?),
        _ => None,
    };
    let mut conn = AsyncSmtpConnection::connect_tokio1(
        (relay.host.as_str(), relay.port),
        Some(TIMEOUT),
        &hello,
        wrapper,
        None,
    )
    .await?;
    match relay.security {
        Security::StartTlsRequired => conn.starttls(tls()?, &hello).await?,
        Security::StartTlsOpportunistic if conn.can_starttls() => {
            conn.starttls(tls()?, &hello).await?
        }
        _ => {}
    }
    if let Some((user, pass)) = &relay.credentials {
        let creds = Credentials::new(user.clone(), pass.expose().to_string());
        conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
            .await?;
    }
    Ok(conn)
}

fn refused(stage: &str, e: &lettre::transport::smtp::Error) -> SendOutcome {
    let reason = format!("{stage}: {}", scrub(&e.to_string()));
    if e.is_permanent() {
        SendOutcome::Permanent { reason }
    } else {
        SendOutcome::Transient { reason }
    }
}

/// One SMTP command with a deadline; `Err(None)` is a timeout.
async fn step<F>(f: F) -> Result<(), Option<lettre::transport::smtp::Error>>
where
    F: std::future::Future<
        Output = Result<
            lettre::transport::smtp::response::Response,
            lettre::transport::smtp::Error,
        >,
    >,
{
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

fn before_body(stage: &str, e: Option<lettre::transport::smtp::Error>) -> SendOutcome {
    match e {
        Some(e) => refused(stage, &e),
        // Nothing was delivered yet: safe to try again.
        None => SendOutcome::Transient {
            reason: format!("{stage}: the server did not answer in time"),
        },
    }
}

/// One SMTP transaction. Before the body is sent, nothing can have been delivered.
async fn transaction(
    conn: &mut AsyncSmtpConnection,
    envelope: &lettre::address::Envelope,
    raw: &[u8],
) -> SendOutcome {
    let sender = envelope.from().cloned();
    if let Err(e) = step(conn.command(Mail::new(sender, vec![]))).await {
        return before_body("MAIL FROM", e);
    }
    for to in envelope.to() {
        if let Err(e) = step(conn.command(Rcpt::new(to.clone(), vec![]))).await {
            return before_body("RCPT TO", e);
        }
    }
    if let Err(e) = step(conn.command(Data)).await {
        return before_body("DATA", e);
    }
    // From here on the body may have reached the server.
    match tokio::time::timeout(TIMEOUT * 2, conn.message(raw)).await {
        Err(_) => SendOutcome::Ambiguous {
            reason: "no answer after the message body was sent (timeout)".into(),
        },
        Ok(Ok(response)) => SendOutcome::Sent {
            provider_id: response
                .message()
                .collect::<Vec<_>>()
                .join(" ")
                .split_whitespace()
                .last()
                .map(scrub),
        },
        // The server answered with a refusal: it did not take the message.
        Ok(Err(e)) if e.is_permanent() || e.is_transient() => refused("end of DATA", &e),
        Ok(Err(e)) => SendOutcome::Ambiguous {
            reason: format!(
                "connection lost after the message body was sent: {}",
                scrub(&e.to_string())
            ),
        },
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
    fn a_name_or_subject_with_line_breaks_builds_one_header_each() {
        let msg = OutgoingEmail {
            to: EmailAddress::parse("anna@example.de").unwrap(),
            to_name: Some("Anna\r\nBcc: evil@example.org\u{0}".into()),
            subject: "Termin\r\nBcc: evil@example.org".into(),
            text: "Text".into(),
            html: "<p>Text</p>".into(),
            attachments: vec![],
            message_id: "<1@praxis.example>".into(),
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
