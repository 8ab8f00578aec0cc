//! `journeyctl prune`: removes raw webhook bodies past their retention period (privacy), in
//! the daily schedule.

use chrono::Duration;

use crate::cli::GlobalArgs;
use crate::clock::Clock;
use crate::config::{self, parse_offset, ConfigError};
use crate::db;
use crate::exit::ExitStatus;

/// `journeyctl prune [--retention DUR]`
pub(crate) async fn prune(
    g: &GlobalArgs,
    clock: Clock,
    retention: &str,
) -> anyhow::Result<ExitStatus> {
    let keep = parse_offset("--retention", retention)?.abs();
    if keep < Duration::days(1) {
        return Err(ConfigError::new(format!(
            "--retention {retention:?} is shorter than a day: bodies are needed for replays of \
             the last day's webhooks; give e.g. 30d"
        ))
        .into());
    }
    let before = clock.now() - keep;
    let db = db::connect(&config::database_url(g)?, 1).await?;
    let pruned = db::retention::prune_receipt_bodies(&db, before).await?;
    if g.json {
        crate::outln!(
            "{}",
            serde_json::json!({"command": "prune", "before": before, "pruned": pruned})
        );
    } else {
        crate::outln!(
            "pruned {pruned} webhook body(ies) received before {}",
            before.format("%Y-%m-%d %H:%M UTC")
        );
    }
    Ok(ExitStatus::Ok)
}
