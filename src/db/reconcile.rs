//! SQL of `reconcile`: its run records (`cal_reconcile_runs`), what the database holds of the
//! bookings the API returned, the record of each change it applied (`cal_reconcile_changes`,
//! and the receipt's `source = 'api'`), and what `status` and `audit` read of them.
//!
//! The bookings themselves are never written here: reconcile applies them through the
//! webhook's code (`webhook::apply`).

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Db;
use crate::domain::BookingStatus;

/// Advisory lock of reconcile runs (first key of `pg_try_advisory_lock(int, int)`; "JR" 0x13).
const RECONCILE_LOCK: (i32, i32) = (0x4a52_0013, 0);

/// Takes the reconcile lock on a connection of its own, which the caller keeps for the run;
/// `None` when another run holds it.
pub(crate) async fn try_lock(db: &Db) -> anyhow::Result<Option<deadpool_postgres::Object>> {
    let client = db.client().await?;
    let got: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, $2)",
            &[&RECONCILE_LOCK.0, &RECONCILE_LOCK.1],
        )
        .await
        .context("Failed to try the reconcile lock")?
        .try_get(0)?;
    Ok(got.then_some(client))
}

pub(crate) async fn unlock(client: &deadpool_postgres::Object) -> anyhow::Result<()> {
    client
        .execute(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&RECONCILE_LOCK.0, &RECONCILE_LOCK.1],
        )
        .await
        .context("Failed to release the reconcile lock")?;
    Ok(())
}

/// The instant (`now`) of the newest succeeded run.
pub(crate) async fn last_success(db: &Db) -> anyhow::Result<Option<DateTime<Utc>>> {
    db.client()
        .await?
        .query_one(
            "SELECT max(now) FROM cal_reconcile_runs WHERE outcome = 'succeeded'",
            &[],
        )
        .await
        .context("Failed to read the last successful reconcile (has `journeyctl migrate` run?)")?
        .try_get(0)
        .map_err(Into::into)
}

pub(crate) async fn start(
    db: &Db,
    id: Uuid,
    run_id: Uuid,
    now: DateTime<Utc>,
    since: DateTime<Utc>,
) -> anyhow::Result<()> {
    db.client()
        .await?
        .execute(
            "INSERT INTO cal_reconcile_runs (id, run_id, now, since) VALUES ($1, $2, $3, $4)",
            &[&id, &run_id, &now, &since],
        )
        .await
        .context("Failed to record the start of the reconcile run")?;
    Ok(())
}

/// How a run ended.
pub(crate) struct Finish<'a> {
    pub succeeded: bool,
    pub requests: u32,
    pub fetched: usize,
    pub applied: usize,
    pub errors: u64,
    pub error: Option<&'a str>,
}

pub(crate) async fn finish(db: &Db, id: Uuid, f: &Finish<'_>) -> anyhow::Result<()> {
    let outcome = if f.succeeded { "succeeded" } else { "failed" };
    db.client()
        .await?
        .execute(
            "UPDATE cal_reconcile_runs
                SET finished_at = now(), outcome = $2, requests = $3, fetched = $4,
                    applied = $5, errors = $6, error = $7
              WHERE id = $1",
            &[
                &id,
                &outcome,
                &(f.requests as i32),
                &(f.fetched as i32),
                &(f.applied as i32),
                &(f.errors.min(i32::MAX as u64) as i32),
                &f.error,
            ],
        )
        .await
        .context("Failed to record the end of the reconcile run")?;
    Ok(())
}

/// What the database holds of one `cal_uid`, for reconcile's comparison with the API
/// (`calapi::plan`). The status is the stored text (another program may write lower case).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    pub status: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub rescheduled_to_uid: Option<String>,
}

/// What the database holds of these uids (absent ones are not in the map).
pub(crate) async fn stored(db: &Db, uids: &[String]) -> anyhow::Result<HashMap<String, Stored>> {
    let rows = db
        .client()
        .await?
        .query(
            "SELECT cal_uid, status, start_time, end_time, rescheduled_to_uid
             FROM cal_bookings WHERE cal_uid = ANY($1)",
            &[&uids],
        )
        .await
        .context("Failed to read the bookings the API returned")?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        out.insert(
            r.try_get(0)?,
            Stored {
                status: r.try_get(1)?,
                start: r.try_get(2)?,
                end: r.try_get(3)?,
                rescheduled_to_uid: r.try_get(4)?,
            },
        );
    }
    Ok(out)
}

/// One applied change, for [`record_change`].
pub(crate) struct Change<'a> {
    pub reconcile_id: Uuid,
    pub cal_uid: &'a str,
    pub receipt_id: Option<Uuid>,
    pub trigger: &'a str,
    pub change: &'a str,
    pub changed_at: Option<DateTime<Utc>>,
    pub found_at: DateTime<Utc>,
}

/// Records a change reconcile applied and marks its receipt as the API's, together.
pub(crate) async fn record_change(db: &Db, c: &Change<'_>) -> anyhow::Result<()> {
    let mut client = db.client().await?;
    let tx = client.transaction().await?;
    if let Some(receipt) = c.receipt_id {
        tx.execute(
            "UPDATE cal_webhook_receipts SET source = 'api' WHERE id = $1",
            &[&receipt],
        )
        .await
        .context("Failed to mark the receipt as the API's")?;
    }
    tx.execute(
        "INSERT INTO cal_reconcile_changes
           (reconcile_id, cal_uid, booking_id, receipt_id, trigger_event, change, changed_at,
            found_at)
         SELECT $1, $2, (SELECT id FROM cal_bookings WHERE cal_uid = $2), $3, $4, $5, $6, $7",
        &[
            &c.reconcile_id,
            &c.cal_uid,
            &c.receipt_id,
            &c.trigger,
            &c.change,
            &c.changed_at,
            &c.found_at,
        ],
    )
    .await
    .with_context(|| format!("Failed to record the reconciled change of {}", c.cal_uid))?;
    tx.commit().await?;
    Ok(())
}

/// Of these bookings, the ones a confirmation is still for: active, session ahead of `now`
/// (a booking found after its session never gets a confirmation).
pub(crate) async fn confirmable(
    db: &Db,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Uuid>> {
    let sql = format!(
        "SELECT id FROM cal_bookings b
         WHERE id = ANY($1) AND {} AND b.start_time > $2 ORDER BY b.start_time",
        BookingStatus::sql_is_active("b")
    );
    let rows = db
        .client()
        .await?
        .query(&sql, &[&ids, &now])
        .await
        .context("Failed to read which reconciled bookings are due a confirmation")?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// What `status` shows of reconcile.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct Health {
    /// No run was ever recorded: reconcile is not set up (no CAL_API_KEY).
    pub never_ran: bool,
    pub last_success: Option<DateTime<Utc>>,
    /// The newest finished run, whatever its outcome.
    pub last_run: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    /// The first run ever (how long reconcile has been failing when it never succeeded).
    pub first_run: Option<DateTime<Utc>>,
    /// Changes applied (lost webhooks) since the period start.
    pub changes_in_period: i64,
}

pub(crate) async fn health(db: &Db, since: DateTime<Utc>) -> anyhow::Result<Health> {
    let row = db
        .client()
        .await?
        .query_one(
            "SELECT (SELECT count(*) FROM cal_reconcile_runs),
                    (SELECT max(now) FROM cal_reconcile_runs WHERE outcome = 'succeeded'),
                    (SELECT min(now) FROM cal_reconcile_runs),
                    (SELECT count(*) FROM cal_reconcile_changes WHERE found_at >= $1),
                    l.now, l.outcome, l.error
             FROM (SELECT 1) one
             LEFT JOIN LATERAL (
               SELECT now, outcome, error FROM cal_reconcile_runs
               WHERE finished_at IS NOT NULL ORDER BY now DESC, finished_at DESC LIMIT 1
             ) l ON true",
            &[&since],
        )
        .await
        .context("Failed to read reconcile runs")?;
    let runs: i64 = row.try_get(0)?;
    Ok(Health {
        never_ran: runs == 0,
        last_success: row.try_get(1)?,
        first_run: row.try_get(2)?,
        changes_in_period: row.try_get(3)?,
        last_run: row.try_get(4)?,
        last_outcome: row.try_get(5)?,
        last_error: row.try_get(6)?,
    })
}

/// A booking that came in (or changed) through reconcile: its webhook was lost.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Reconciled {
    pub booking_id: Option<Uuid>,
    pub cal_uid: String,
    pub trigger: String,
    pub change: String,
    pub changed_at: Option<DateTime<Utc>>,
    pub found_at: DateTime<Utc>,
}

/// Changes reconcile applied in `[from, to]`, oldest first.
pub(crate) async fn changes(
    db: &Db,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Vec<Reconciled>> {
    let rows = db
        .client()
        .await?
        .query(
            "SELECT booking_id, cal_uid, trigger_event, change, changed_at, found_at
             FROM cal_reconcile_changes WHERE found_at BETWEEN $1 AND $2
             ORDER BY found_at, id",
            &[&from, &to],
        )
        .await
        .context("Failed to read the changes reconcile applied")?;
    rows.iter()
        .map(|r| {
            Ok(Reconciled {
                booking_id: r.try_get(0)?,
                cal_uid: r.try_get(1)?,
                trigger: r.try_get(2)?,
                change: r.try_get(3)?,
                changed_at: r.try_get(4)?,
                found_at: r.try_get(5)?,
            })
        })
        .collect()
}
