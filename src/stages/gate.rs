//! The last word on an SMS before it is claimed: quiet hours (issue 14), and what the SMS asks
//! of Twilio (status callback, validity period).
//!
//! The driver calls [`quiet_hours`] for every message it is about to claim. Outside quiet
//! hours, and for email, it says "send". Inside them an SMS is held in the ledger until they
//! end (a `retry` row with `not_before`, counted `retry_scheduled`; the selection picks it up
//! then, see `db::bookings::has_work`) or, when the session would be too close by then,
//! skipped and counted `skipped_quiet_hours`. The email of the same booking is not affected.
//! The rule itself is `domain::quiet_hours`; this file only applies and records it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::journey::Journey;
use super::plan::Message;
use crate::db::bookings::DueBooking;
use crate::db::ledger::DeliveryKey;
use crate::db::sms::{self, Hold};
use crate::domain::quiet_hours::{self, SmsTiming};
use crate::domain::{Channel, Counter, Stage};
use crate::notify::sms::SmsOptions;

/// What the gate decided for one message.
#[derive(Debug)]
pub(crate) enum Gate {
    /// Claim and send it now.
    Send,
    /// Not now, counted under this counter (recorded in the ledger unless a dry run).
    Held(Counter),
    /// Recording the decision failed: count an error (the message stays as it was).
    Failed(String),
}

/// Applies quiet hours to one message of booking `b`, judged at the run's instant `now`.
pub(crate) async fn quiet_hours(
    j: &Journey,
    stage: Stage,
    b: &DueBooking,
    out: &Message,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Gate {
    if out.to.channel() != Channel::Sms {
        return Gate::Send;
    }
    let q = j.settings.sms_quiet_hours;
    let tz = j.settings.timezone;
    let lead = quiet_hours::min_lead(out.kind).unwrap_or_else(chrono::Duration::zero);
    let timing = q.timing(tz, now, out.context.start, lead);
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string();
    let (counter, reason) = match timing {
        SmsTiming::Now => return Gate::Send,
        SmsTiming::Defer { until } => (
            Counter::RetryScheduled,
            format!("quiet hours: held until {}", local(until)),
        ),
        SmsTiming::TooLate { quiet_until } => (
            Counter::SkippedQuietHours,
            format!(
                "quiet hours: not sent, the session starts less than {} min after they end ({})",
                lead.num_minutes(),
                local(quiet_until)
            ),
        ),
    };
    log::info!("{stage}: booking {} {} sms: {reason}", b.id, out.role);
    if dry_run {
        return Gate::Held(counter);
    }
    match record_hold(j, stage, b, out, timing, &reason).await {
        Ok(()) => Gate::Held(counter),
        Err(e) => Gate::Failed(format!("{e:#}")),
    }
}

/// Writes the quiet-hours decision on an SMS to the ledger: held until a time, or skipped.
async fn record_hold(
    j: &Journey,
    stage: Stage,
    b: &DueBooking,
    out: &Message,
    timing: SmsTiming,
    reason: &str,
) -> anyhow::Result<()> {
    let key = DeliveryKey {
        booking_id: b.id,
        stage: stage.ledger(),
        channel: Channel::Sms,
        role: out.role,
    };
    let decision = match timing {
        SmsTiming::Defer { until } => Hold::Defer { until, reason },
        _ => Hold::Skip { reason },
    };
    let masked = out.to.masked();
    sms::hold(&j.db, &key, b.patient_id, j.run_id, &masked, &decision).await?;
    Ok(())
}

/// What an SMS asks of Twilio: the status callback of its delivery (when
/// `PUBLIC_CALLBACK_BASE` is set) and, for reminders, a validity period that ends 5 minutes
/// before the session.
pub(crate) fn sms_options(j: &Journey, out: &Message, delivery_id: Uuid) -> SmsOptions {
    SmsOptions {
        status_callback: j
            .settings
            .public_callback_base
            .as_ref()
            .map(|base| crate::config::status_callback_url(base, delivery_id)),
        validity_secs: quiet_hours::sms_validity_secs(out.kind, j.clock.now(), out.context.start),
    }
}
