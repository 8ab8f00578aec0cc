//! `journeyctl migrate`: applies `sql/` through `db::migrate` and prints what it applied.
//! Creates what is missing, never drops data; safe to repeat.

use crate::cli::GlobalArgs;
use crate::exit::ExitStatus;
use crate::{config, db};

/// `journeyctl migrate`
pub(crate) async fn migrate(g: &GlobalArgs) -> anyhow::Result<ExitStatus> {
    let url = config::database_url(g)?;
    let db = db::connect(&url, 1).await?;
    let applied = db::migrate::run(&db).await?;
    if g.json {
        crate::outln!(
            "{}",
            serde_json::json!({"command": "migrate", "applied": applied.applied})
        );
    } else if applied.applied.is_empty() {
        crate::outln!("schema is up to date (nothing to apply)");
    } else {
        for m in &applied.applied {
            crate::outln!("applied {m}");
        }
    }
    Ok(ExitStatus::Ok)
}
