//! The channels: email (SMTP through lettre, or `.eml` files) and SMS (Twilio's Messages API
//! through ureq, or a JSON-lines file). This module knows nothing of bookings or stages: it
//! sends what it is given and reports exactly what the provider said, classified so the caller
//! can decide between retrying, giving up and asking a human.
//!
//! It must never put an address, a phone number or a message body into a reason string or a
//! log line: provider texts are passed through [`scrub`] first.
//!
//! [`Senders`] is the one seam between the stages and the providers: one sender per
//! [`Channel`], a [`Rendered`] message and a [`Recipient`] in, a [`SendOutcome`] out. A new
//! channel is a new file here, a `Channel` and a `Recipient` variant, a field and an arm in
//! [`Senders`] (docs/ARCHITECTURE.md, "Add a channel"); the stage driver does not change.

pub mod email;
pub mod sms;
mod smtp;

use crate::config::{ConfigError, Settings};
use crate::domain::{Channel, EmailAddress, PhoneNumber};
use email::{Attachment, Mailer, OutgoingEmail};
use sms::{SmsOptions, SmsSender};

/// Where one message goes: the address, whose kind is the channel.
#[derive(Clone, Debug)]
pub enum Recipient {
    Email(EmailAddress),
    Sms(PhoneNumber),
}

impl Recipient {
    /// The address as it may be logged and stored (`j***@example.de`, `+49***5678`).
    pub fn masked(&self) -> String {
        match self {
            Recipient::Email(e) => e.masked(),
            Recipient::Sms(p) => p.masked(),
        }
    }
    pub fn channel(&self) -> Channel {
        match self {
            Recipient::Email(_) => Channel::Email,
            Recipient::Sms(_) => Channel::Sms,
        }
    }
}

/// A message rendered for one recipient, as the providers take it. Channels use what they
/// carry: an SMS only `text` and `sms`; an email everything else.
#[derive(Default)]
pub struct Rendered {
    pub to_name: Option<String>,
    pub subject: Option<String>,
    pub text: String,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// Full Message-ID including angle brackets (the ledger row's).
    pub message_id: String,
    /// The one-click unsubscribe URL of an advertising email (RFC 8058).
    pub list_unsubscribe: Option<String>,
    /// What an SMS asks of Twilio besides its text.
    pub sms: SmsOptions,
}

/// One sender per channel; `None` where the channel is off (SMS without settings, email in a
/// dry run without a transport).
#[derive(Clone, Debug, Default)]
pub struct Senders {
    email: Option<Mailer>,
    sms: Option<SmsSender>,
}

impl Senders {
    pub fn new(email: Option<Mailer>, sms: Option<SmsSender>) -> Senders {
        Senders { email, sms }
    }

    /// The senders the settings configure. Email is required, except in a dry run (which
    /// sends nothing); SMS is off without its settings.
    pub fn from_settings(settings: &Settings, dry_run: bool) -> Result<Senders, ConfigError> {
        let email = match (&settings.email.transport, dry_run) {
            (Some(_), _) => Some(Mailer::from_settings(&settings.email)?),
            (None, true) => None,
            (None, false) => {
                settings.email.require_transport()?;
                None
            }
        };
        let sms = settings.sms.as_ref().map(SmsSender::from_settings);
        Ok(Senders { email, sms })
    }

    /// Whether messages of `channel` can be sent at all in this run.
    pub fn enabled(&self, channel: Channel) -> bool {
        match channel {
            Channel::Email => self.email.is_some(),
            Channel::Sms => self.sms.is_some(),
        }
    }

    /// The email sender's own address (the ORGANIZER of an invite without a therapist's).
    pub fn email_sender_address(&self) -> Option<String> {
        self.email.as_ref().map(Mailer::sender_address)
    }

    /// Sends `msg` to `to` through the channel of `to`, once `gate` allows: `None` when it
    /// said no, and nothing was handed over.
    pub async fn send(&self, to: &Recipient, msg: Rendered, gate: Gate) -> Option<SendOutcome> {
        match (to, &self.email, &self.sms) {
            (Recipient::Email(to), Some(mailer), _) => {
                let email = OutgoingEmail {
                    to: to.clone(),
                    to_name: msg.to_name,
                    subject: msg.subject.unwrap_or_default(),
                    text: msg.text,
                    html: msg.html.unwrap_or_default(),
                    attachments: msg.attachments,
                    message_id: msg.message_id,
                    list_unsubscribe: msg.list_unsubscribe,
                };
                mailer.send_gated(&email, gate).await
            }
            (Recipient::Sms(to), _, Some(sms)) => match gate.await {
                true => Some(sms.send_with(to, &msg.text, &msg.sms).await),
                false => None,
            },
            _ => Some(SendOutcome::Permanent {
                reason: format!("no {} transport configured", to.channel()),
            }),
        }
    }
}

/// What a send waits for right before the provider can have the message: `true`, hand it
/// over; `false`, do not. A sender does all it can before awaiting it (for SMTP: the
/// connection and the envelope, up to the relay's 354), so whatever the caller has to commit
/// first (a batch's send-started stamp) commits while the relay answers.
pub type Gate = futures::future::BoxFuture<'static, bool>;

/// A gate that is already open.
pub fn open_gate() -> Gate {
    Box::pin(std::future::ready(true))
}

/// What a provider made of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted. `provider_id`: the SMTP server's queue id when it gives one, the outbox file
    /// name, or Twilio's message sid.
    Sent { provider_id: Option<String> },
    /// Not sent, safe to try again later: SMTP 4xx, a connection or TLS failure before any mail
    /// was transferred, Twilio 429.
    Transient { reason: String },
    /// Not sent and never will be as it is: SMTP 5xx, Twilio 4xx other than those below.
    Permanent { reason: String },
    /// The recipient unsubscribed from SMS (Twilio 21610, the `code`).
    OptedOut { code: u32, reason: String },
    /// The number itself can never receive SMS: Twilio 21211 (not a valid number) or 21614
    /// (not a mobile number), the `code`. Like `OptedOut`, the number is not tried again.
    Unreachable { code: u32, reason: String },
    /// May or may not have been delivered: the connection was lost or timed out after the
    /// message went out, Twilio 5xx, a 2xx without a sid.
    Ambiguous { reason: String },
    /// The provider refused our own configuration (wrong credentials, an untrusted relay
    /// certificate): nothing was sent and no other message of this channel can be sent until
    /// an operator fixes `setting`. The message stays retryable; the run stops using the
    /// channel and exits 2 naming the setting.
    Misconfigured {
        setting: &'static str,
        reason: String,
    },
}

/// Masks anything that looks like an email address or a phone number in a provider's text.
pub fn scrub(text: &str) -> String {
    let mut out = Vec::new();
    for word in text.split(' ') {
        let trimmed = word.trim_matches(|c: char| "<>()[],;:\"'".contains(c));
        let masked = if trimmed.contains('@') && trimmed.len() > 3 {
            Some(crate::domain::mask_email(trimmed))
        } else if trimmed.chars().filter(|c| c.is_ascii_digit()).count() >= 7
            && trimmed
                .chars()
                .all(|c| c.is_ascii_digit() || "+-/. ".contains(c))
        {
            Some(crate::domain::mask_phone(trimmed))
        } else {
            None
        };
        out.push(match masked {
            Some(m) => word.replace(trimmed, &m),
            None => word.to_string(),
        });
    }
    let joined = out.join(" ");
    // Keep reasons short enough for a log line and a database column.
    if joined.chars().count() > 300 {
        joined.chars().take(300).collect::<String>() + "…"
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_masks_addresses_and_numbers_in_provider_texts() {
        let s = scrub("550 5.1.1 <jonas.weber@example.de>: Recipient address rejected");
        assert!(!s.contains("jonas.weber"), "{s}");
        assert!(s.contains("j***@example.de"), "{s}");
        let s = scrub("The 'To' number +4915112345678 is not a valid phone number.");
        assert!(!s.contains("12345678"), "{s}");
        assert!(s.contains("+49***5678"), "{s}");
        assert_eq!(
            scrub("451 4.3.0 try again later"),
            "451 4.3.0 try again later"
        );
    }
}
