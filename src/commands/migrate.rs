use crate::cli::GlobalArgs;
use crate::{config, db, ExitStatus};

/// `journeyctl migrate`
pub async fn migrate(g: &GlobalArgs) -> anyhow::Result<ExitStatus> {
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
