//! `journeyctl migrate`: applies `sql/V*__*.sql` with refinery, under an advisory lock so two
//! hosts migrating at once do not race. The SQL itself only creates what is missing, so it is
//! safe against the marketplace's existing tables; refinery records what ran in
//! `refinery_schema_history`, which makes a second run a no-op.

use anyhow::Context;

use super::Db;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// Advisory lock key of `migrate` ("jrnymigr" as bytes).
const MIGRATE_LOCK: i64 = 0x6a72_6e79_6d69_6772;

/// What a migrate run did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub applied: Vec<String>,
}

pub(crate) async fn run(db: &Db) -> anyhow::Result<Applied> {
    let mut client = db.client().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .await
        .context("Failed to take the migration lock")?;
    let result = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut **client)
        .await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
        .await;
    let report =
        result.context("Failed to apply migrations (nothing of the failed file was kept)")?;
    unlock.context("Failed to release the migration lock")?;
    Ok(Applied {
        applied: report
            .applied_migrations()
            .iter()
            .map(|m| format!("V{}__{}", m.version(), m.name()))
            .collect(),
    })
}
