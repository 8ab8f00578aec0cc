//! `journeyctl demo`: the whole journey on a database it creates, over a simulated week.
//!
//! It starts a throwaway PostgreSQL (or, with DATABASE_URL, creates a fresh database of its own
//! on that server: it never touches a database it did not create), migrates, seeds a realistic
//! week, feeds the bookings in through the real webhook path (signed bodies), runs the shipped
//! schedule (5-minute and 30-minute stages, as in crontab.example) on a simulated clock with
//! outbox transports, and prints who got what when. Emails (.eml) and SMS (sms.jsonl) stay in
//! the output directory it names.
//!
//! This file sets the demo up and tears it down; `scenario` holds the week as data,
//! `simulate` the clock and the schedule, `timeline` what is printed at the end. Its SQL is in
//! `db::demo`.

mod scenario;
mod simulate;
mod timeline;

use std::path::{Path, PathBuf};

use chrono::Utc;
use uuid::Uuid;

use super::stage::journey;
use crate::cli::{GlobalArgs, SettingsArgs};
use crate::clock::Clock;
use crate::config::{ConfigError, Settings};
use crate::db;
use crate::exit::ExitStatus;
use crate::pgtemp::{Options, TempCluster};
use crate::secret::Secret;

/// The demo's webhook signing secret: its bodies are signed and verified like real ones.
const SECRET: &str = "whsec_demo_only";

/// Connections of the pool that creates or migrates the demo database: one statement at a time.
const ADMIN_CONNECTIONS: usize = 1;

/// Connections of the run's pool: enough for the stages' concurrent sends.
const RUN_CONNECTIONS: usize = 10;

/// `journeyctl demo [--out DIR]`
pub(crate) async fn demo(g: &GlobalArgs, out: Option<PathBuf>) -> anyhow::Result<ExitStatus> {
    let dir = output_dir(out)?;
    // Thousands of simulated runs: keep their per-run lines out of the way of the progress.
    if !g.quiet && g.verbose == 0 {
        log::set_max_level(log::LevelFilter::Warn);
    }
    let (_cluster, url) = own_database(g.database_url.as_deref()).await?;
    let migrate_db = db::connect(&Secret::new(&url), ADMIN_CONNECTIONS).await?;
    db::migrate::run(&migrate_db).await?;

    let settings = settings(&dir)?;
    let tz = settings.timezone;
    let mut g2 = g.clone();
    g2.database_url = Some(url.clone());
    let clock = Clock::fixed(scenario::week_start());
    let base = journey(&g2, settings, clock, false, RUN_CONNECTIONS).await?;

    let scenario = scenario::Scenario::new();
    db::demo::seed(&base.db, &scenario.seed()).await?;
    let outcome = simulate::week(&base, &scenario.deliveries(), tz).await?;

    timeline::print_timeline(&base.db, tz).await?;
    let summary = timeline::Summary {
        totals: &outcome.totals,
        dir: &dir,
        database_url: g.database_url.is_some().then_some(url.as_str()),
    };
    timeline::print_summary(&base.db, &summary).await?;
    Ok(if outcome.failures > 0 {
        ExitStatus::Failed
    } else {
        ExitStatus::Ok
    })
}

/// `--out`, or `journeyctl-demo-<time>` in the current directory: created, and named.
fn output_dir(out: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = out.unwrap_or_else(|| {
        PathBuf::from(format!(
            "journeyctl-demo-{}",
            Utc::now().format("%Y%m%d-%H%M%S")
        ))
    });
    std::fs::create_dir_all(&dir)
        .map_err(|e| ConfigError::new(format!("cannot create {}: {e}", dir.display())))?;
    let dir = dir.canonicalize()?;
    eprintln!("demo: output in {}", dir.display());
    Ok(dir)
}

/// A database of our own: a fresh one on DATABASE_URL's server when given, else one in a
/// throwaway cluster (returned too: it lives as long as the demo holds it).
async fn own_database(server: Option<&str>) -> anyhow::Result<(Option<TempCluster>, String)> {
    match server.map(str::trim).filter(|s| !s.is_empty()) {
        Some(server) => {
            let name = format!("journeyctl_demo_{}", Uuid::new_v4().simple());
            let admin = db::connect(&Secret::new(server), ADMIN_CONNECTIONS).await?;
            db::demo::create_database(&admin, &name).await?;
            eprintln!("demo: created database {name} on the server of DATABASE_URL");
            Ok((None, format!("{}{name}", server_base(server))))
        }
        None => {
            let cluster = throwaway_cluster()?;
            let admin_url = format!("{}postgres", cluster.base_url);
            let admin = db::connect(&Secret::new(admin_url), ADMIN_CONNECTIONS).await?;
            db::demo::create_database(&admin, "journey_demo").await?;
            let url = format!("{}journey_demo", cluster.base_url);
            Ok((Some(cluster), url))
        }
    }
}

/// The server part of a database URL, up to and including the `/` before the database name.
fn server_base(url: &str) -> &str {
    let base = url.split('?').next().unwrap_or_default();
    &base[..base.rfind('/').map(|i| i + 1).unwrap_or(base.len())]
}

fn throwaway_cluster() -> anyhow::Result<TempCluster> {
    // Named before it exists: whatever stops the demo, the cluster's watchdog stops the
    // server and removes this directory (see `pgtemp`).
    let cluster_dir = crate::pgtemp::new_dir();
    eprintln!(
        "demo: starting a throwaway PostgreSQL in {} (initdb/pg_ctl; removed when the \
         demo ends, however it ends)",
        cluster_dir.display()
    );
    let cluster = TempCluster::start_in(
        cluster_dir,
        Options {
            tls: false,
            stat_statements: false,
            durable: false,
        },
    )?;
    eprintln!("demo: PostgreSQL is up");
    Ok(cluster)
}

/// Outbox transports in `dir`, and every optional feature on, with made-up addresses.
fn settings(dir: &Path) -> Result<Settings, ConfigError> {
    Settings::from_args(&SettingsArgs {
        email_outbox_dir: Some(dir.join("email")),
        sms_outbox_dir: Some(dir.join("sms")),
        email_from: Some("Praxisteam <termine@therapie.example>".into()),
        cal_webhook_secret: Some(SECRET.into()),
        public_base_url: Some("https://therapie.example".into()),
        qa_notify_email: Some("qa@therapie.example".into()),
        // Advertising emails carry an unsubscribe link; the demo's key is thrown away with it.
        public_callback_base: Some("https://journey.therapie.example".into()),
        unsubscribe_secret: Some(Uuid::new_v4().simple().to_string()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_database_goes_on_the_server_of_database_url() {
        assert_eq!(
            server_base("postgres://u:p@db.example:5432/journey?sslmode=require"),
            "postgres://u:p@db.example:5432/"
        );
        assert_eq!(server_base("postgres://u@h/"), "postgres://u@h/");
    }
}
