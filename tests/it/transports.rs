//! The peers a run talks to: a real SMTP server (mailin-embedded, which we did not write) and
//! an HTTP stub of Twilio's Messages API (wiremock). Both record what they received.
//!
//! The SMTP server can be told to answer RCPT with 451 and to hold messages after their body
//! (a "gate"), so tests can provoke retries and kill a run while sends are in flight.

#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use mailin_embedded::response::{INTERNAL_ERROR, NO_MAILBOX, OK, START_DATA};
use mailin_embedded::{Handler, Response, Server, SslConfig};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::harness::Cli;
use crate::support::{envelope_handler_methods, Envelope};

/// One message as the SMTP server received it.
#[derive(Clone, Debug)]
pub struct Mail {
    pub to: Vec<String>,
    pub raw: Vec<u8>,
}

impl Mail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .expect("received mail parses")
    }
    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_string()
    }
    pub fn text(&self) -> String {
        self.parsed()
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default()
    }
    pub fn html(&self) -> String {
        self.parsed()
            .body_html(0)
            .map(|t| t.into_owned())
            .unwrap_or_default()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        let raw = String::from_utf8_lossy(&self.raw).into_owned();
        raw.lines()
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .map(|l| l[name.len() + 1..].trim().to_string())
    }
}

#[derive(Default)]
struct SmtpState {
    mails: Mutex<Vec<Mail>>,
    reply_451: AtomicBool,
    reply_550: AtomicBool,
    sessions: AtomicUsize,
    gate_closed: Mutex<bool>,
    gate: Condvar,
    held: AtomicUsize,
    held_changed: Condvar,
    held_lock: Mutex<()>,
}

#[derive(Clone)]
struct RecordingHandler {
    state: Arc<SmtpState>,
    envelope: Envelope,
}

impl Handler for RecordingHandler {
    envelope_handler_methods!();
    fn helo(&mut self, _ip: std::net::IpAddr, _domain: &str) -> Response {
        self.state.sessions.fetch_add(1, Ordering::SeqCst);
        OK
    }
    fn rcpt(&mut self, to: &str) -> Response {
        if self.state.reply_451.load(Ordering::SeqCst) {
            return INTERNAL_ERROR;
        }
        if self.state.reply_550.load(Ordering::SeqCst) {
            return NO_MAILBOX;
        }
        self.envelope.rcpt(to);
        OK
    }
    fn data_end(&mut self) -> Response {
        // Hold here while the gate is closed: the body has arrived, the answer has not.
        let mut closed = self.state.gate_closed.lock().unwrap();
        if *closed {
            self.state.held.fetch_add(1, Ordering::SeqCst);
            {
                let _g = self.state.held_lock.lock().unwrap();
                self.state.held_changed.notify_all();
            }
            while *closed {
                closed = self.state.gate.wait(closed).unwrap();
            }
        }
        drop(closed);
        let (to, raw) = self.envelope.take();
        self.state.mails.lock().unwrap().push(Mail { to, raw });
        OK
    }
}

pub struct SmtpServer {
    pub port: u16,
    state: Arc<SmtpState>,
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind SMTP test server");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(SmtpState::default());
        let handler = RecordingHandler {
            state: state.clone(),
            envelope: Envelope::default(),
        };
        let mut server = Server::new(handler);
        server
            .with_name("smtp.test")
            .with_ssl(SslConfig::None)
            .expect("no TLS")
            .with_num_threads(64)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        SmtpServer { port, state }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.state.mails.lock().unwrap().clone()
    }

    pub fn reply_451(&self, on: bool) {
        self.state.reply_451.store(on, Ordering::SeqCst);
    }

    /// SMTP sessions opened so far (EHLO/HELO greetings).
    pub fn sessions(&self) -> usize {
        self.state.sessions.load(Ordering::SeqCst)
    }

    pub fn reply_550(&self, on: bool) {
        self.state.reply_550.store(on, Ordering::SeqCst);
    }

    /// While closed, messages are held after their body, unanswered.
    pub fn close_gate(&self) {
        *self.state.gate_closed.lock().unwrap() = true;
    }

    pub fn open_gate(&self) {
        *self.state.gate_closed.lock().unwrap() = false;
        self.state.gate.notify_all();
    }

    /// Blocks until at least `n` messages are held at the gate (or panics after 60 s).
    pub fn wait_held(&self, n: usize) {
        let mut g = self.state.held_lock.lock().unwrap();
        while self.state.held.load(Ordering::SeqCst) < n {
            let (guard, timeout) = self
                .state
                .held_changed
                .wait_timeout(g, Duration::from_secs(60))
                .unwrap();
            g = guard;
            assert!(
                !timeout.timed_out(),
                "messages never reached the SMTP server"
            );
        }
    }
}

/// An SMS as Twilio's stub received it.
#[derive(Clone, Debug)]
pub struct Sms {
    pub to: String,
    pub body: String,
    pub from: Option<String>,
    pub authorization: Option<String>,
}

struct UniqueSid(AtomicUsize);

impl Respond for UniqueSid {
    fn respond(&self, _req: &Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": format!("SM{n:032x}"),
            "status": "queued"
        }))
    }
}

pub struct Transports {
    pub smtp: SmtpServer,
    pub twilio: MockServer,
}

pub const TWILIO_SID: &str = "ACtest0000000000000000000000000000";
pub const TWILIO_TOKEN: &str = "twilio-test-token-do-not-log";
/// Where `serve` is reachable in unsubscribe links of test emails, and the key of their tokens.
pub const PUBLIC_CALLBACK_BASE: &str = "https://journey.praxis.example";
pub const UNSUBSCRIBE_SECRET: &str = "unsubscribe-test-secret-0123456789abcdef";

impl Transports {
    pub async fn start() -> Transports {
        let twilio = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/2010-04-01/Accounts/[^/]+/Messages\.json$"))
            .respond_with(UniqueSid(AtomicUsize::new(0)))
            .mount(&twilio)
            .await;
        Transports {
            smtp: SmtpServer::start(),
            twilio,
        }
    }

    /// Every later SMS request gets this answer.
    pub async fn twilio_reply(&self, status: u16, body: serde_json::Value) {
        self.twilio.reset().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .mount(&self.twilio)
            .await;
    }

    pub fn smtp_reply_451(&self, on: bool) {
        self.smtp.reply_451(on);
    }

    pub fn emails(&self) -> Vec<Mail> {
        self.smtp.mails()
    }

    /// Every SMS request the stub received, whatever it answered.
    pub async fn sms(&self) -> Vec<Sms> {
        self.twilio
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let form: std::collections::HashMap<String, String> =
                    url::form_urlencoded::parse(&r.body).into_owned().collect();
                Sms {
                    to: form.get("To").cloned().unwrap_or_default(),
                    body: form.get("Body").cloned().unwrap_or_default(),
                    from: form.get("From").cloned(),
                    authorization: r
                        .headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                }
            })
            .collect()
    }

    /// The command with SMTP and Twilio pointed at these peers.
    pub fn apply(&self, cli: Cli) -> Cli {
        let mut cli = self.apply_email_only(cli);
        cli.env("TWILIO_ACCOUNT_SID", TWILIO_SID)
            .env("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
            .env("TWILIO_FROM", "+4930123456789")
            .env("TWILIO_API_BASE", self.twilio.uri());
        cli
    }

    /// The command with SMTP pointed at this server and SMS off.
    pub fn apply_email_only(&self, mut cli: Cli) -> Cli {
        cli.env("SMTP_URL", self.smtp.url())
            .env("EMAIL_FROM", "Praxisteam <termine@praxis.example>")
            .env("PUBLIC_BASE_URL", "https://therapie.example")
            .env("PUBLIC_CALLBACK_BASE", PUBLIC_CALLBACK_BASE)
            .env("UNSUBSCRIBE_SECRET", UNSUBSCRIBE_SECRET);
        cli
    }
}
