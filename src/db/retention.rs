//! Retention of raw webhook bodies. `cal_webhook_receipts.body` keeps what Cal.com sent, for
//! replays and investigations; it holds patients' names, emails and phone numbers, so it is
//! removed after the retention period. The row, its hash (duplicate detection), trigger, uid
//! and outcome stay.

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::Db;

/// Rows changed per statement: keeps each transaction short on a large table.
const PRUNE_BATCH: i64 = 5_000;

/// Removes the bodies of receipts received before `before`. Returns how many were removed.
pub(crate) async fn prune_receipt_bodies(db: &Db, before: DateTime<Utc>) -> anyhow::Result<u64> {
    let client = db.client().await?;
    let statement = client
        .prepare(
            "UPDATE cal_webhook_receipts SET body = NULL
             WHERE id IN (SELECT id FROM cal_webhook_receipts
                          WHERE received_at < $1 AND body IS NOT NULL
                          LIMIT $2)",
        )
        .await
        .context("Failed to prepare the pruning of webhook bodies")?;
    let mut total = 0;
    loop {
        let n = client
            .execute(&statement, &[&before, &PRUNE_BATCH])
            .await
            .context("Failed to prune webhook bodies")?;
        total += n;
        if n < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}
