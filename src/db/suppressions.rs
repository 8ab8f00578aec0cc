//! The `suppressions` table (README, "Opt-outs"): recipients who must not get anything more on a channel
//! (a STOP reply, a number Twilio calls invalid, the unsubscribe link, an operator). Addresses
//! come in normalised by the caller (see `stages::optout::normalise`); this module only runs
//! the SQL. Adding is idempotent: the first reason and source stay.

use std::collections::HashSet;

use anyhow::Context;

use super::Db;
use crate::domain::Channel;

/// Addresses asked about per statement: keeps the parameter arrays of one query bounded.
pub(crate) const CHUNK: usize = 1_000;

/// Suppresses `address` on `channel`. Returns whether it was new (false: already suppressed).
pub(crate) async fn add(
    db: &Db,
    channel: Channel,
    address: &str,
    reason: &str,
    source: &str,
) -> anyhow::Result<bool> {
    let client = db.client().await?;
    let n = client
        .execute(
            "INSERT INTO suppressions (channel, address, reason, source)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (channel, address) DO NOTHING",
            &[&channel.as_str(), &address, &reason, &source],
        )
        .await
        .with_context(|| format!("Failed to add a {channel} suppression"))?;
    Ok(n == 1)
}

/// Lifts the suppression of `address` on `channel`. Returns whether there was one.
pub(crate) async fn remove(db: &Db, channel: Channel, address: &str) -> anyhow::Result<bool> {
    let client = db.client().await?;
    let n = client
        .execute(
            "DELETE FROM suppressions WHERE channel = $1 AND address = $2",
            &[&channel.as_str(), &address],
        )
        .await
        .with_context(|| format!("Failed to remove a {channel} suppression"))?;
    Ok(n > 0)
}

/// Which of these `(channel, address)` pairs are suppressed: one query per [`CHUNK`] pairs.
pub(crate) async fn which_of(
    db: &Db,
    candidates: &[(Channel, String)],
) -> anyhow::Result<HashSet<(Channel, String)>> {
    let mut found = HashSet::new();
    if candidates.is_empty() {
        return Ok(found);
    }
    let client = db.client().await?;
    for chunk in candidates.chunks(CHUNK) {
        let channels: Vec<&str> = chunk.iter().map(|(c, _)| c.as_str()).collect();
        let addresses: Vec<&str> = chunk.iter().map(|(_, a)| a.as_str()).collect();
        let rows = client
            .query(
                "SELECT s.channel, s.address
                 FROM suppressions s
                 JOIN unnest($1::text[], $2::text[]) AS q(channel, address)
                   ON s.channel = q.channel AND s.address = q.address",
                &[&channels, &addresses],
            )
            .await
            .context("Failed to look up suppressions")?;
        for r in rows {
            let channel: String = r.try_get(0).context("Failed to read a suppression")?;
            let address: String = r.try_get(1).context("Failed to read a suppression")?;
            let channel = Channel::parse(&channel)
                .with_context(|| format!("suppressions holds an unknown channel {channel:?}"))?;
            found.insert((channel, address));
        }
    }
    Ok(found)
}
