//! Advisory locks of stage runs: one session lock per stage, so two runs of the same stage
//! never overlap (the second one finds it held and does nothing). The lock lives as long as
//! the connection that took it stays checked out; [`unlock_stage`] releases it.

use crate::domain::Stage;

/// Advisory lock namespace of stage runs (first key of `pg_try_advisory_lock(int, int)`).
pub const STAGE_LOCK_NS: i32 = 0x4a43_0001;

/// Tries to take `stage`'s lock on this connection: `true` when this session holds it now.
pub(crate) async fn try_stage_lock(
    client: &deadpool_postgres::ClientWrapper,
    stage: Stage,
) -> anyhow::Result<bool> {
    let sql = format!(
        "SELECT pg_try_advisory_lock({STAGE_LOCK_NS}, {})",
        stage as i32
    );
    ask(client, &sql, stage).await
}

/// For a stage with nothing due: takes `stage`'s lock and releases it at once, in one
/// statement. `true` when it was free (this session held it for that moment), `false` when
/// another run holds it.
pub(crate) async fn probe_stage_lock(
    client: &deadpool_postgres::ClientWrapper,
    stage: Stage,
) -> anyhow::Result<bool> {
    ask(client, &format!("SELECT {}", probe(stage)), stage).await
}

/// SQL: takes `stage`'s lock and releases it at once; `true` when it was free. CASE
/// evaluates in order: the lock is released only when this expression took it.
fn probe(stage: Stage) -> String {
    format!(
        "CASE WHEN pg_try_advisory_lock({STAGE_LOCK_NS}, {k})
              THEN pg_advisory_unlock({STAGE_LOCK_NS}, {k}) ELSE false END",
        k = stage as i32
    )
}

/// [`probe_stage_lock`] for several stages with nothing due, in one statement: one answer per
/// stage, in `stages`' order.
pub(crate) async fn probe_stage_locks(
    client: &deadpool_postgres::ClientWrapper,
    stages: &[Stage],
) -> anyhow::Result<Vec<bool>> {
    if stages.is_empty() {
        return Ok(Vec::new());
    }
    // The columns are evaluated left to right, each releasing only the lock it took.
    let columns: Vec<String> = stages.iter().map(|&stage| probe(stage)).collect();
    let sql = format!("SELECT {}", columns.join(", "));
    let messages = client
        .simple_query(&sql)
        .await
        .map_err(|e| anyhow::anyhow!("Failed to look at the stage locks: {e}"))?;
    let row = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("the look at the stage locks answered no row"))?;
    (0..stages.len())
        .map(|i| {
            row.get(i).map(|v| v == "t").ok_or_else(|| {
                anyhow::anyhow!("the look at the stage locks answered no column {i}")
            })
        })
        .collect()
}

/// Runs a lock statement answering one boolean, in one round trip: the lock is a constant
/// pair, no parameters to bind.
async fn ask(
    client: &deadpool_postgres::ClientWrapper,
    sql: &str,
    stage: Stage,
) -> anyhow::Result<bool> {
    let answer = client
        .simple_query(sql)
        .await
        .map_err(|e| anyhow::anyhow!("Failed to try the {stage} lock: {e}"))?
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "t"),
            _ => None,
        })
        .unwrap_or(false);
    Ok(answer)
}

/// Releases `stage`'s lock taken on this connection by [`try_stage_lock`].
pub(crate) async fn unlock_stage(
    client: &deadpool_postgres::ClientWrapper,
    stage: Stage,
) -> anyhow::Result<()> {
    let sql = format!(
        "SELECT pg_advisory_unlock({STAGE_LOCK_NS}, {})",
        stage as i32
    );
    client
        .simple_query(&sql)
        .await
        .map_err(|e| anyhow::anyhow!("Failed to release the {stage} lock: {e}"))?;
    Ok(())
}
