//! SMS: Twilio's Messages API over ureq (blocking, so it runs on tokio's blocking pool, with
//! timeouts), or one JSON line per message appended to `sms.jsonl` in `SMS_OUTBOX_DIR`.
//!
//! Twilio's answer is classified for the ledger: 401/403 means our credentials are wrong
//! ([`SendOutcome::Misconfigured`], nothing sent, retryable once fixed); a 5xx or a timeout after
//! the request went out does not say whether Twilio queued the message, so before calling it
//! ambiguous the Messages list is asked: a message Twilio never created is safe to retry, one it
//! did create was sent. Only when that lookup fails too is the message in doubt.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};

use super::{scrub, SendOutcome};
use crate::config::{SmsTransport, TwilioSender, TwilioSettings};
use crate::domain::PhoneNumber;

/// Idle connections kept to Twilio: at least as many as sends run at once (a run's
/// `--concurrency`, 8 by default), so every send after the first few reuses a connection
/// (and its TLS session) instead of opening one; ureq's default keeps 3. A pool never holds
/// more idle connections than were open at once, so a generous bound costs nothing.
const IDLE_CONNECTIONS: usize = 64;

#[derive(Clone)]
enum Transport {
    Twilio {
        settings: Arc<TwilioSettings>,
        agent: ureq::Agent,
    },
    Outbox {
        dir: PathBuf,
    },
}

/// Sends SMS through the configured transport. `Debug` never shows the auth token.
#[derive(Clone)]
pub struct SmsSender {
    transport: Transport,
}

impl std::fmt::Debug for SmsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsSender")
            .field("transport", &self.describe())
            .finish()
    }
}

impl SmsSender {
    pub fn from_settings(t: &SmsTransport) -> SmsSender {
        let transport = match t {
            SmsTransport::Twilio(s) => {
                crate::tls::ensure_tls_provider();
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_connect(Some(s.timeout.min(Duration::from_secs(10))))
                    .timeout_global(Some(s.timeout))
                    .http_status_as_error(false)
                    .max_idle_connections(IDLE_CONNECTIONS)
                    .max_idle_connections_per_host(IDLE_CONNECTIONS)
                    .build()
                    .into();
                Transport::Twilio {
                    settings: Arc::new(s.clone()),
                    agent,
                }
            }
            SmsTransport::Outbox { dir } => Transport::Outbox { dir: dir.clone() },
        };
        SmsSender { transport }
    }

    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Twilio { settings, .. } => format!("twilio {}", settings.api_base),
            Transport::Outbox { dir } => format!("outbox {}", dir.join("sms.jsonl").display()),
        }
    }

    /// Sends one SMS with Twilio's defaults (no status callback, default validity).
    pub async fn send(&self, to: &PhoneNumber, body: &str) -> SendOutcome {
        self.send_with(to, body, &SmsOptions::default()).await
    }

    /// Sends one SMS asking Twilio for `opts` (status callback, validity period).
    pub async fn send_with(&self, to: &PhoneNumber, body: &str, opts: &SmsOptions) -> SendOutcome {
        let transport = self.transport.clone();
        let to = to.clone();
        let body = body.to_string();
        let opts = opts.clone();
        match tokio::task::spawn_blocking(move || match transport {
            Transport::Twilio { settings, agent } => twilio(&agent, &settings, &to, &body, &opts),
            Transport::Outbox { dir } => outbox(&dir, &to, &body, &opts),
        })
        .await
        {
            Ok(outcome) => outcome,
            Err(e) => SendOutcome::Ambiguous {
                reason: format!("the SMS task failed: {e}"),
            },
        }
    }
}

/// What a message asks of Twilio besides its text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmsOptions {
    /// `StatusCallback`: where Twilio posts the message's status changes.
    pub status_callback: Option<String>,
    /// `ValidityPeriod` in seconds (1..=36000): Twilio drops the message if it could not be
    /// handed on by then.
    pub validity_secs: Option<u32>,
}

fn basic_auth(s: &TwilioSettings) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        s.account_sid,
        s.auth_token.expose()
    ));
    format!("Basic {auth}")
}

fn twilio(
    agent: &ureq::Agent,
    s: &TwilioSettings,
    to: &PhoneNumber,
    body: &str,
    opts: &SmsOptions,
) -> SendOutcome {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        s.api_base, s.account_sid
    );
    let sender = match &s.sender {
        TwilioSender::From(n) => ("From", n.as_str().to_string()),
        TwilioSender::MessagingService(sid) => ("MessagingServiceSid", sid.clone()),
    };
    let started = Utc::now();
    let validity = opts.validity_secs.map(|v| v.to_string());
    let mut form = vec![
        ("To", to.as_str()),
        ("Body", body),
        (sender.0, sender.1.as_str()),
    ];
    if let Some(cb) = &opts.status_callback {
        form.push(("StatusCallback", cb.as_str()));
    }
    if let Some(v) = &validity {
        form.push(("ValidityPeriod", v.as_str()));
    }
    let result = agent
        .post(&url)
        .header("Authorization", &basic_auth(s))
        .send_form(form);
    let outcome = match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let text = response.body_mut().read_to_string().unwrap_or_default();
            classify(status, &text)
        }
        Err(e) => transport_error(&e),
    };
    match outcome {
        SendOutcome::Ambiguous { reason } => look_up(agent, s, to, body, started, reason),
        other => other,
    }
}

/// What Twilio's answer to the create request means for the message.
fn classify(status: u16, text: &str) -> SendOutcome {
    let json: serde_json::Value = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    let code = json.get("code").and_then(|c| c.as_i64());
    let message = json
        .get("message")
        .and_then(|m| m.as_str())
        .map(scrub)
        .unwrap_or_default();
    let reason = || match code {
        Some(c) => format!("Twilio {status}, error {c}: {message}"),
        None => format!("Twilio {status}: {message}"),
    };
    match status {
        200..=299 => match json.get("sid").and_then(|s| s.as_str()) {
            Some(sid) => SendOutcome::Sent {
                provider_id: Some(sid.to_string()),
            },
            None => SendOutcome::Ambiguous {
                reason: format!("Twilio {status} without a message sid"),
            },
        },
        // 20003 "Authenticate": the account SID and token do not match. No SMS of this run
        // can go out; none of them is the recipient's fault.
        401 | 403 => SendOutcome::Misconfigured {
            setting: "TWILIO_AUTH_TOKEN",
            reason: format!(
                "{}; check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
                reason()
            ),
        },
        429 => SendOutcome::Transient { reason: reason() },
        _ if code == Some(21610) => SendOutcome::OptedOut {
            code: 21610,
            reason: reason(),
        },
        _ if code == Some(21211) || code == Some(21614) => SendOutcome::Unreachable {
            code: code.and_then(|c| u32::try_from(c).ok()).unwrap_or_default(),
            reason: reason(),
        },
        400..=499 => SendOutcome::Permanent { reason: reason() },
        _ => SendOutcome::Ambiguous { reason: reason() },
    }
}

/// How far Twilio's `date_created` (whole seconds, Twilio's clock) may lie before our own
/// start of the request and still be this request's message.
const CLOCK_SLACK_SECS: i64 = 60;

/// Messages of the first page of the lookup; a patient gets a handful of SMS in all.
const LOOKUP_PAGE_SIZE: &str = "100";

/// After an answer that leaves the message in doubt: asks Twilio's Messages list whether a
/// message with this recipient and body was created since the request started.
///
/// The list is filtered by `To` only, not by `DateSent`: Twilio sets `date_sent` when it hands
/// the message on, so a message it queued a moment ago has none and a `DateSent>=` filter would
/// hide exactly the message we are looking for. The creation time is compared here instead.
fn look_up(
    agent: &ureq::Agent,
    s: &TwilioSettings,
    to: &PhoneNumber,
    body: &str,
    started: DateTime<Utc>,
    why: String,
) -> SendOutcome {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        s.api_base, s.account_sid
    );
    let in_doubt = |lookup: String| SendOutcome::Ambiguous {
        reason: format!("{why}; looking the message up failed too: {lookup}"),
    };
    let response = agent
        .get(&url)
        .header("Authorization", &basic_auth(s))
        .query("To", to.as_str())
        .query("PageSize", LOOKUP_PAGE_SIZE)
        .call();
    let mut response = match response {
        Ok(r) => r,
        // A bad URI would quote the query, i.e. the recipient's number.
        Err(ureq::Error::BadUri(_)) => return in_doubt("bad URI".into()),
        Err(e) => return in_doubt(scrub(&e.to_string())),
    };
    let status = response.status().as_u16();
    if status != 200 {
        return in_doubt(format!("Twilio {status}"));
    }
    let list: serde_json::Value = match response.body_mut().read_json() {
        Ok(v) => v,
        Err(e) => return in_doubt(format!("unreadable list: {}", scrub(&e.to_string()))),
    };
    let Some(messages) = list.get("messages").and_then(|m| m.as_array()) else {
        return in_doubt("the answer has no messages list".into());
    };
    let since = started - chrono::Duration::seconds(CLOCK_SLACK_SECS);
    let ours = messages.iter().find(|m| {
        let text = |k: &str| m.get(k).and_then(|v| v.as_str());
        let created = text("date_created")
            .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.with_timezone(&Utc));
        text("to") == Some(to.as_str())
            && text("body").is_some_and(|b| b.trim() == body.trim())
            && created.is_some_and(|c| c >= since)
    });
    match ours {
        Some(m) => SendOutcome::Sent {
            provider_id: m.get("sid").and_then(|v| v.as_str()).map(str::to_string),
        },
        // More pages than one: the message might be on another; do not guess.
        None if list.get("next_page_uri").is_some_and(|n| !n.is_null()) => {
            in_doubt("not on the first page of the list".into())
        }
        None => SendOutcome::Transient {
            reason: format!("{why}; Twilio has no such message: not sent"),
        },
    }
}

/// Failures before the request was sent are safe to retry; after it, Twilio may have queued
/// the message (the caller then looks it up).
fn transport_error(e: &ureq::Error) -> SendOutcome {
    use ureq::Timeout as T;
    let reason = format!("Twilio request failed: {}", scrub(&e.to_string()));
    match e {
        ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Tls(_)
        | ureq::Error::Rustls(_)
        | ureq::Error::BadUri(_)
        | ureq::Error::Timeout(T::Resolve | T::Connect | T::SendRequest) => {
            SendOutcome::Transient { reason }
        }
        _ => SendOutcome::Ambiguous { reason },
    }
}

fn outbox(dir: &std::path::Path, to: &PhoneNumber, body: &str, opts: &SmsOptions) -> SendOutcome {
    let id = format!("outbox-{}", uuid::Uuid::new_v4().simple());
    let mut line = serde_json::json!({
        "to": to.as_str(),
        "body": body,
        "id": id,
        "at": chrono::Utc::now().to_rfc3339(),
        "status_callback": opts.status_callback,
        "validity_period": opts.validity_secs,
    })
    .to_string();
    line.push('\n');
    let result = std::fs::create_dir_all(dir).and_then(|()| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("sms.jsonl"))?;
        // One write per line: appends from several processes do not interleave.
        f.write_all(line.as_bytes())
    });
    match result {
        Ok(()) => SendOutcome::Sent {
            provider_id: Some(id),
        },
        Err(e) => SendOutcome::Transient {
            reason: format!("cannot append to {}: {e}", dir.join("sms.jsonl").display()),
        },
    }
}
