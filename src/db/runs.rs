//! `journey_runs` and `events`: what each run did, for `status`, dashboards and audits.
//! Properties never hold a name, an email address, a phone number or a message body.

use anyhow::Context;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Db;

pub async fn start(
    db: &Db,
    run_id: Uuid,
    command: &str,
    now: DateTime<Utc>,
    host: &str,
) -> anyhow::Result<()> {
    db.client()
        .await?
        .execute(
            "INSERT INTO journey_runs (id, command, now, dry_run, host) VALUES ($1, $2, $3, false, $4)",
            &[&run_id, &command, &now, &host],
        )
        .await
        .with_context(|| format!("Failed to record the start of run {run_id}"))?;
    Ok(())
}

/// Closes the run row and writes the `cal_booking_followups_completed` event, together.
pub async fn finish(
    db: &Db,
    run_id: Uuid,
    stages: &serde_json::Value,
    totals: &serde_json::Value,
    exit_status: i32,
    event_properties: &serde_json::Value,
) -> anyhow::Result<()> {
    db.client()
        .await?
        .query_one(
            "WITH r AS (
               UPDATE journey_runs SET finished_at = now(), stages = $2, totals = $3,
                      exit_status = $4
                WHERE id = $1 RETURNING 1
             ), e AS (
               INSERT INTO events (type, level, properties)
               VALUES ('cal_booking_followups_completed', CASE WHEN $4 = 0 THEN 'info' ELSE 'warn' END, $5)
               RETURNING 1
             )
             SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM e)",
            &[&run_id, stages, totals, &exit_status, event_properties],
        )
        .await
        .with_context(|| format!("Failed to record the end of run {run_id}"))?;
    Ok(())
}

/// One event row on its own (errors outside a delivery, webhook receipts).
pub async fn event(
    db: &Db,
    kind: &str,
    level: &str,
    properties: &serde_json::Value,
) -> anyhow::Result<()> {
    db.client()
        .await?
        .execute(
            "INSERT INTO events (type, level, properties) VALUES ($1, $2, $3)",
            &[&kind, &level, properties],
        )
        .await
        .with_context(|| format!("Failed to write a {kind} event"))?;
    Ok(())
}
