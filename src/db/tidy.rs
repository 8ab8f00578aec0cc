//! What a run does to the ledger before its stages select, for all its stages in one
//! statement: claims a dead run left `sending` are settled (`ledger::promote_ctes`), walk-in
//! bookings whose person now exists get their patient (`bookings::LINK_WALK_INS`), and
//! retries whose window closed expire (`ledger::expire_ctes`). The same work as each stage's
//! own three statements (`stages::select`), in one round trip for the whole run.

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio_postgres::types::{ToSql, Type};

use super::ledger::{expire_ctes, promote_ctes, ExpireParams};
use crate::domain::Stage;

/// What the statement did, per stage in the order asked.
#[derive(Debug, Default)]
pub(crate) struct Tidied {
    /// Walk-in bookings linked to their people rows.
    pub linked: u64,
    /// Deliveries of a dead run now `in_doubt`, per stage.
    pub in_doubt: Vec<u64>,
    /// Retries whose window closed, now `expired`, per stage.
    pub expired: Vec<u64>,
}

/// Tidies the ledger for `stages` (each with its window's earlier edge) as of `now`.
pub(crate) async fn tidy_run(
    client: &deadpool_postgres::ClientWrapper,
    now: DateTime<Utc>,
    stages: &[(Stage, DateTime<Utc>)],
) -> anyhow::Result<Tidied> {
    if stages.is_empty() {
        return Ok(Tidied::default());
    }
    let ledgers: Vec<&str> = stages.iter().map(|(s, _)| s.ledger_stage()).collect();
    let expire: Vec<ExpireParams> = stages
        .iter()
        .map(|(s, from)| ExpireParams::of(*s, *from))
        .collect();
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> =
        vec![(&now, Type::TIMESTAMPTZ), (&ledgers, Type::TEXT_ARRAY)];
    let mut ctes = vec![
        format!("linked AS ({})", super::bookings::LINK_WALK_INS),
        promote_ctes(2),
    ];
    let (mut in_doubt, mut expired) = (Vec::new(), Vec::new());
    for (i, ((stage, _), p)) in stages.iter().zip(&expire).enumerate() {
        // Each stage's three values follow the two shared ones.
        let first = params.len() + 1;
        ctes.push(expire_ctes(*stage, i, [first, first + 1, first + 2]));
        params.extend(p.bound());
        in_doubt.push(format!(
            "(SELECT count(*) FROM promoted WHERE stage = ${})",
            first + 1
        ));
        expired.push(format!("(SELECT count(*) FROM expired_{i})"));
    }
    let sql = format!(
        "WITH {ctes}
         SELECT (SELECT count(*) FROM linked), ARRAY[{in_doubt}]::bigint[], ARRAY[{expired}]::bigint[]",
        ctes = ctes.join(",\n"),
        in_doubt = in_doubt.join(", "),
        expired = expired.join(", "),
    );
    let row = client
        .query_typed_one(&sql, &params)
        .await
        .context("Failed to settle abandoned sends, link walk-ins and expire closed retries")?;
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Tidied {
        linked: count(row.try_get(0)?),
        in_doubt: row
            .try_get::<_, Vec<i64>>(1)?
            .into_iter()
            .map(count)
            .collect(),
        expired: row
            .try_get::<_, Vec<i64>>(2)?
            .into_iter()
            .map(count)
            .collect(),
    })
}
