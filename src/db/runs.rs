//! `journey_runs` and `events`: what each run did, for `status`, dashboards and audits.
//! Properties never hold a name, an email address, a phone number or a message body.

use anyhow::Context;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Db;
use crate::domain::{EventKind, EventLevel};
use tokio_postgres::types::Type;

/// What a run records when it starts.
pub(crate) struct RunStart<'a> {
    pub run_id: Uuid,
    pub command: &'a str,
    pub now: DateTime<Utc>,
    pub host: &'a str,
    /// The process's connection name: no connection of that name left means the run is dead.
    pub application_name: &'a str,
    /// Wall-clock time by which the run must have ended (deadline plus drain bound).
    pub deadline: Option<std::time::Duration>,
}

pub(crate) async fn start(db: &Db, r: &RunStart<'_>) -> anyhow::Result<()> {
    let run_id = r.run_id;
    let deadline_s = r.deadline.map(|d| d.as_secs_f64());
    // Typed parameters: one round trip, nothing prepared (a run writes this once).
    db.client()
        .await?
        .query_typed(
            "INSERT INTO journey_runs (id, command, now, dry_run, host, application_name, deadline_at)
             VALUES ($1, $2, $3, false, $4, $5, now() + make_interval(secs => $6::float8))",
            &[
                (&run_id, Type::UUID),
                (&r.command, Type::TEXT),
                (&r.now, Type::TIMESTAMPTZ),
                (&r.host, Type::TEXT),
                (&r.application_name, Type::TEXT),
                (&deadline_s, Type::FLOAT8),
            ],
        )
        .await
        .with_context(|| format!("Failed to record the start of run {run_id}"))?;
    Ok(())
}

/// Closes the run row and writes the `cal_booking_followups_completed` event, together.
pub(crate) async fn finish(
    db: &Db,
    run_id: Uuid,
    stages: &serde_json::Value,
    totals: &serde_json::Value,
    exit_status: i32,
    outcome: &str,
    event_properties: &serde_json::Value,
) -> anyhow::Result<()> {
    let kind = EventKind::CalBookingFollowupsCompleted;
    let level = if exit_status == 0 {
        kind.level()
    } else {
        EventLevel::Warn
    };
    db.client()
        .await?
        .query_typed_one(
            "WITH r AS (
               UPDATE journey_runs SET finished_at = now(), stages = $2, totals = $3,
                      exit_status = $4, outcome = $6
                WHERE id = $1 RETURNING 1
             ), e AS (
               INSERT INTO events (type, level, properties)
               VALUES ($7, $8, $5)
               RETURNING 1
             )
             SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM e)",
            &[
                (&run_id, Type::UUID),
                (stages, Type::JSONB),
                (totals, Type::JSONB),
                (&exit_status, Type::INT4),
                (event_properties, Type::JSONB),
                (&outcome, Type::TEXT),
                (&kind.as_str(), Type::TEXT),
                (&level.as_str(), Type::TEXT),
            ],
        )
        .await
        .with_context(|| format!("Failed to record the end of run {run_id}"))?;
    Ok(())
}

/// One event row on its own (errors outside a delivery, webhook receipts).
pub(crate) async fn event(
    db: &Db,
    kind: EventKind,
    level: EventLevel,
    properties: &serde_json::Value,
) -> anyhow::Result<()> {
    db.client()
        .await?
        .execute(
            "INSERT INTO events (type, level, properties) VALUES ($1, $2, $3)",
            &[&kind.as_str(), &level.as_str(), properties],
        )
        .await
        .with_context(|| format!("Failed to write a {kind} event"))?;
    Ok(())
}

/// An `error` event on its own (a failure outside a delivery: a run, a webhook, a sweep).
pub(crate) async fn error_event(db: &Db, properties: &serde_json::Value) -> anyhow::Result<()> {
    event(db, EventKind::Error, EventKind::Error.level(), properties).await
}

/// Closes the records of runs that died without finishing them (killed, or cut off from the
/// database): no connection of theirs is left, or (rows without a connection name) they
/// started over a day ago. They end `abandoned` with exit status 2 and a note in `totals`;
/// their deliveries are judged by the ledger (`sending` rows become `in_doubt`). Returns how
/// many.
pub(crate) async fn close_dangling(db: &Db, own_run: Uuid) -> anyhow::Result<u64> {
    let client = db.client().await?;
    super::ledger::count_typed(
        &client,
        "WITH u AS (
            UPDATE journey_runs r
                SET finished_at = now(), outcome = 'abandoned', exit_status = 2,
                    totals = r.totals || jsonb_build_object('note',
                      'the run ended without recording its end (killed, or it lost the \
                       database); closed by run ' || $1::uuid::text)
              WHERE r.finished_at IS NULL AND r.id <> $1
                AND CASE WHEN r.application_name IS NULL
                         THEN r.started_at < now() - interval '1 day'
                         ELSE NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(NULL) a
                                          WHERE a.application_name = r.application_name)
                    END
             RETURNING 1)
         SELECT count(*) FROM u",
        &[(&own_run, Type::UUID)],
    )
    .await
    .context("Failed to close the records of runs that died")
}

/// Whether the database answers at all (after a failed write: lost, or another error?).
pub(crate) async fn reachable(db: &Db) -> bool {
    db.ping().await
}
