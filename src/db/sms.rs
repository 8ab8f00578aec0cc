//! The SMS side of the delivery ledger: SMS held back by quiet hours, and the delivery status
//! Twilio reports afterwards (`provider_status`, `provider_error_code`).
//!
//! A held SMS is a `retry` row with `not_before` (the end of quiet hours): the selection picks
//! its booking up again from then on, even past the stage's window (see
//! [`super::bookings::has_work`]), and the claim takes it like any retry. An SMS that quiet
//! hours made useless is a `skipped` row with its reason. Neither changes a row that is not
//! `retry` (another run's claim, a sent message).

use anyhow::Context;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::ledger::DeliveryKey;
use super::Db;
use crate::domain::SmsStatus;

/// What quiet hours decided for one SMS.
pub(crate) enum Hold<'a> {
    /// Send it from `until` on.
    Defer {
        until: DateTime<Utc>,
        reason: &'a str,
    },
    /// Not sent at all.
    Skip { reason: &'a str },
}

/// Writes the decision: a new row, or the message's `retry` row updated. Returns whether a
/// row was written (false: another run holds the message in another state).
pub(crate) async fn hold(
    db: &Db,
    key: &DeliveryKey,
    patient_id: Option<Uuid>,
    run_id: Uuid,
    recipient_masked: &str,
    hold: &Hold<'_>,
) -> anyhow::Result<bool> {
    let (status, not_before, reason) = match hold {
        Hold::Defer { until, reason } => ("retry", Some(*until), *reason),
        Hold::Skip { reason } => ("skipped", None, *reason),
    };
    let client = db.client().await?;
    let n = client
        .execute(
            "INSERT INTO journey_deliveries AS d
               (booking_id, patient_id, stage, channel, recipient_role, status, attempts, run_id,
                last_error, not_before, recipient_masked)
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10)
             ON CONFLICT (booking_id, stage, channel, recipient_role) DO UPDATE
               SET status = EXCLUDED.status, run_id = EXCLUDED.run_id,
                   last_error = EXCLUDED.last_error, not_before = EXCLUDED.not_before,
                   updated_at = now()
             WHERE d.status = 'retry'",
            &[
                &key.booking_id,
                &patient_id,
                &key.stage.as_str(),
                &key.channel.as_str(),
                &key.role.as_str(),
                &status,
                &run_id,
                &reason,
                &not_before,
                &recipient_masked,
            ],
        )
        .await
        .with_context(|| {
            format!(
                "Failed to record the quiet-hours {status} of the {} {} sms of booking {}",
                key.stage, key.role, key.booking_id
            )
        })?;
    Ok(n == 1)
}

/// What recording a status callback did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// The row now carries this status.
    Updated,
    /// The row already had a final status or a later one: nothing changed.
    Kept,
    /// No SMS delivery with this id (or with another message sid).
    Unknown,
}

/// Records a verified status callback on its delivery, monotonically: a status replaces the
/// recorded one only if it ranks at least as high and the recorded one is not final. One
/// statement, so two callbacks racing each other cannot move a row back.
pub(crate) async fn record_status(
    db: &Db,
    delivery_id: Uuid,
    status: SmsStatus,
    error_code: Option<&str>,
    message_sid: Option<&str>,
) -> anyhow::Result<Recorded> {
    let sql = format!(
        "WITH upd AS (
           UPDATE journey_deliveries
              SET provider_status = $2,
                  provider_error_code = coalesce($3, provider_error_code),
                  provider_status_at = now(),
                  provider_message_id = coalesce(provider_message_id, $4)
            WHERE id = $1 AND channel = 'sms'
              AND (provider_message_id IS NULL OR $4::text IS NULL OR provider_message_id = $4)
              AND {current} < 4 AND {current} <= $5
            RETURNING 1
         )
         SELECT (SELECT count(*) FROM upd),
                EXISTS (SELECT 1 FROM journey_deliveries WHERE id = $1 AND channel = 'sms'
                          AND (provider_message_id IS NULL OR $4::text IS NULL
                               OR provider_message_id = $4))",
        current = SmsStatus::sql_rank("provider_status"),
    );
    let client = db.client().await?;
    let row = client
        .query_one(
            &sql,
            &[
                &delivery_id,
                &status.as_str(),
                &error_code,
                &message_sid,
                &status.rank(),
            ],
        )
        .await
        .with_context(|| format!("Failed to record the SMS status of delivery {delivery_id}"))?;
    let updated: i64 = row.try_get(0)?;
    let exists: bool = row.try_get(1)?;
    Ok(match (updated, exists) {
        (1.., _) => Recorded::Updated,
        (_, true) => Recorded::Kept,
        (_, false) => Recorded::Unknown,
    })
}
