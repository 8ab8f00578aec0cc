//! SMS: Twilio's Messages API over ureq (blocking, so it runs on tokio's blocking pool, with
//! timeouts), or one JSON line per message appended to `sms.jsonl` in `SMS_OUTBOX_DIR`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use super::{scrub, SendOutcome};
use crate::config::{SmsTransport, TwilioSender, TwilioSettings};
use crate::domain::PhoneNumber;

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
                crate::ensure_tls_provider();
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_connect(Some(Duration::from_secs(10)))
                    .timeout_global(Some(Duration::from_secs(30)))
                    .http_status_as_error(false)
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

    pub async fn send(&self, to: &PhoneNumber, body: &str) -> SendOutcome {
        let transport = self.transport.clone();
        let to = to.clone();
        let body = body.to_string();
        match tokio::task::spawn_blocking(move || match transport {
            Transport::Twilio { settings, agent } => twilio(&agent, &settings, &to, &body),
            Transport::Outbox { dir } => outbox(&dir, &to, &body),
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

fn twilio(agent: &ureq::Agent, s: &TwilioSettings, to: &PhoneNumber, body: &str) -> SendOutcome {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        s.api_base, s.account_sid
    );
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        s.account_sid,
        s.auth_token.expose()
    ));
    let sender = match &s.sender {
        TwilioSender::From(n) => ("From", n.as_str().to_string()),
        TwilioSender::MessagingService(sid) => ("MessagingServiceSid", sid.clone()),
    };
    let result = agent
        .post(&url)
        .header("Authorization", &format!("Basic {auth}"))
        .send_form([
            ("To", to.as_str()),
            ("Body", body),
            (sender.0, sender.1.as_str()),
        ]);
    let mut response = match result {
        Ok(r) => r,
        Err(e) => return transport_error(&e),
    };
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
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
        429 => SendOutcome::Transient { reason: reason() },
        _ if code == Some(21610) => SendOutcome::OptedOut { reason: reason() },
        400..=499 => SendOutcome::Permanent { reason: reason() },
        _ => SendOutcome::Ambiguous { reason: reason() },
    }
}

/// Failures before the request was sent are safe to retry; after it, Twilio may have queued
/// the message.
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

fn outbox(dir: &std::path::Path, to: &PhoneNumber, body: &str) -> SendOutcome {
    let id = format!("outbox-{}", uuid::Uuid::new_v4().simple());
    let mut line = serde_json::json!({
        "to": to.as_str(),
        "body": body,
        "id": id,
        "at": chrono::Utc::now().to_rfc3339(),
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
