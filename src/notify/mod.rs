//! The channels: email (SMTP through lettre, or `.eml` files) and SMS (Twilio's Messages API
//! through ureq, or a JSON-lines file). This module knows nothing of bookings or stages: it
//! sends what it is given and reports exactly what the provider said, classified so the caller
//! can decide between retrying, giving up and asking a human.
//!
//! It must never put an address, a phone number or a message body into a reason string or a
//! log line: provider texts are passed through [`scrub`] first.

pub mod email;
pub mod sms;
mod smtp;

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
