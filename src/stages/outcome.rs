//! What a provider's answer means for the journey: one [`SendOutcome`] → the delivery's
//! ledger status, the counter it bumps, whether it fails the run, and the event written with
//! it. The mapping is the one `match` in [`judge`]; the caller applies it.

use crate::db::ledger::EventRow;
use crate::domain::{Channel, Counter, DeliveryStatus, EventKind, EventLevel, MessageKind};
use crate::notify::SendOutcome;

/// What one provider answer does to the ledger, the counters and the events.
pub(crate) struct Verdict {
    pub status: DeliveryStatus,
    pub counter: Counter,
    /// Counts as a failure of the run (exit status 1).
    pub failed: bool,
    pub provider_id: Option<String>,
    /// The reason stored on the row (and logged) when the message did not go out.
    pub error: Option<String>,
    pub event: EventRow,
}

/// Maps a provider's answer on a message of `kind` sent by `channel`; `props` are the
/// delivery's event properties (booking, stage, channel, role, delivery, run, attempt).
pub(crate) fn judge(
    outcome: &SendOutcome,
    channel: Channel,
    kind: MessageKind,
    props: &serde_json::Value,
) -> Verdict {
    use DeliveryStatus as S;
    match outcome {
        SendOutcome::Sent { provider_id } => Verdict {
            status: S::Sent,
            counter: sent_counter(channel),
            failed: false,
            provider_id: provider_id.clone(),
            error: None,
            event: EventRow {
                kind: match channel {
                    Channel::Email => EventKind::EmailSent,
                    Channel::Sms => EventKind::SmsSent,
                },
                level: EventLevel::Info,
                properties: with(props, serde_json::json!({"kind": kind.event_kind()})),
            },
        },
        SendOutcome::Transient { reason } => {
            failure(S::Retry, Counter::RetryScheduled, reason, props)
        }
        SendOutcome::Permanent { reason } => failure(S::Failed, Counter::Errors, reason, props),
        SendOutcome::OptedOut { reason, .. } => skipped(
            Counter::SkippedOptedOut,
            format!("recipient opted out: {reason}"),
            (EventKind::SmsOptedOut, EventLevel::Info),
            props,
        ),
        // The number itself cannot receive SMS: never attempted again (suppressed after).
        SendOutcome::Unreachable { reason, .. } => skipped(
            Counter::SkippedInvalidPhone,
            format!("number rejected by the provider: {reason}"),
            (EventKind::SmsUnreachable, EventLevel::Warn),
            props,
        ),
        SendOutcome::Ambiguous { reason } => failure(S::InDoubt, Counter::InDoubt, reason, props),
        // Nothing left: retryable once the setting is fixed (the caller stops the channel).
        SendOutcome::Misconfigured { reason, .. } => {
            failure(S::Retry, Counter::RetryScheduled, reason, props)
        }
    }
}

/// The counter of a message sent by `channel`.
pub(crate) fn sent_counter(channel: Channel) -> Counter {
    match channel {
        Channel::Email => Counter::SentEmail,
        Channel::Sms => Counter::SentSms,
    }
}

/// The ledger word of a failure's status, as the `error` event's `outcome` names it.
fn outcome_word(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::InDoubt => "in_doubt",
        DeliveryStatus::Failed => "failed",
        _ => "retry",
    }
}

/// A failed delivery: its ledger state, its counter, and an `error` event.
fn failure(
    status: DeliveryStatus,
    counter: Counter,
    reason: &str,
    props: &serde_json::Value,
) -> Verdict {
    let extra =
        serde_json::json!({"source": "deliver", "reason": reason, "outcome": outcome_word(status)});
    Verdict {
        status,
        counter,
        failed: true,
        provider_id: None,
        error: Some(reason.to_string()),
        event: super::report::error_row(with(props, extra)),
    }
}

/// A message the provider refused for good for this recipient: `skipped`, not a failure.
fn skipped(
    counter: Counter,
    error: String,
    (kind, level): (EventKind, EventLevel),
    props: &serde_json::Value,
) -> Verdict {
    Verdict {
        status: DeliveryStatus::Skipped,
        counter,
        failed: false,
        provider_id: None,
        error: Some(error),
        event: EventRow {
            kind,
            level,
            properties: props.clone(),
        },
    }
}

/// `props` with the fields of `extra` added.
fn with(props: &serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut p = props.clone();
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> serde_json::Value {
        serde_json::json!({"booking_id": "b", "channel": "sms"})
    }

    #[test]
    fn a_sent_message_counts_per_channel_and_writes_its_sent_event() {
        let sent = SendOutcome::Sent {
            provider_id: Some("SM1".into()),
        };
        let v = judge(&sent, Channel::Sms, MessageKind::Reminder24h, &props());
        assert_eq!(
            (v.status, v.counter, v.failed),
            (DeliveryStatus::Sent, Counter::SentSms, false)
        );
        assert_eq!(
            (v.event.kind, v.event.level),
            (EventKind::SmsSent, EventLevel::Info)
        );
        assert_eq!(v.provider_id.as_deref(), Some("SM1"));
        assert_eq!(v.event.properties["booking_id"], "b");
        let v = judge(&sent, Channel::Email, MessageKind::Reminder24h, &props());
        assert_eq!(
            (v.counter, v.event.kind),
            (Counter::SentEmail, EventKind::EmailSent)
        );
    }

    #[test]
    fn failures_map_to_their_status_counter_and_error_event() {
        let r = || "why".to_string();
        let cases = [
            (
                SendOutcome::Transient { reason: r() },
                DeliveryStatus::Retry,
                Counter::RetryScheduled,
                "retry",
            ),
            (
                SendOutcome::Permanent { reason: r() },
                DeliveryStatus::Failed,
                Counter::Errors,
                "failed",
            ),
            (
                SendOutcome::Ambiguous { reason: r() },
                DeliveryStatus::InDoubt,
                Counter::InDoubt,
                "in_doubt",
            ),
            (
                SendOutcome::Misconfigured {
                    setting: "SMTP_URL",
                    reason: r(),
                },
                DeliveryStatus::Retry,
                Counter::RetryScheduled,
                "retry",
            ),
        ];
        for (outcome, status, counter, word) in cases {
            let v = judge(&outcome, Channel::Email, MessageKind::Reminder1h, &props());
            assert_eq!(
                (v.status, v.counter, v.failed),
                (status, counter, true),
                "{outcome:?}"
            );
            assert_eq!(v.event.kind, EventKind::Error);
            assert_eq!(v.event.properties["outcome"], word);
            assert_eq!(v.event.properties["reason"], "why");
            assert_eq!(v.error.as_deref(), Some("why"));
        }
    }

    #[test]
    fn a_refused_number_is_skipped_not_failed() {
        let stop = SendOutcome::OptedOut {
            code: 21610,
            reason: "STOP".into(),
        };
        let v = judge(&stop, Channel::Sms, MessageKind::Reminder1h, &props());
        assert_eq!(
            (v.status, v.counter, v.failed, v.event.kind, v.event.level),
            (
                DeliveryStatus::Skipped,
                Counter::SkippedOptedOut,
                false,
                EventKind::SmsOptedOut,
                EventLevel::Info
            )
        );
        let bad = SendOutcome::Unreachable {
            code: 21211,
            reason: "invalid".into(),
        };
        let v = judge(&bad, Channel::Sms, MessageKind::Reminder1h, &props());
        assert_eq!(
            (v.status, v.counter, v.event.kind, v.event.level),
            (
                DeliveryStatus::Skipped,
                Counter::SkippedInvalidPhone,
                EventKind::SmsUnreachable,
                EventLevel::Warn
            )
        );
        assert_eq!(
            v.error.as_deref(),
            Some("number rejected by the provider: invalid")
        );
    }
}
