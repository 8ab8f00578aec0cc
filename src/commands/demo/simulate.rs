//! The demo's simulator: a clock that ticks through the week, feeding each webhook in through
//! the real webhook path (signed bodies) at its own instant, refreshing the slot cache hourly,
//! and running the shipped schedule (crontab.example) on every tick.

use chrono::{DateTime, Duration};
use chrono_tz::Tz;
use uuid::Uuid;

use super::scenario::{week_start, Delivery};
use super::SECRET;
use crate::clock::Clock;
use crate::commands::stage::{execute, StageRun};
use crate::commands::webhook::AfterCommit;
use crate::domain::{Counters, Stage};
use crate::exit::ExitStatus;
use crate::secret::Secret;
use crate::stages::{Journey, StageOptions};
use crate::webhook::apply::{handle, Verification};

/// The `command` the demo's runs are recorded under in `journey_runs`.
pub(super) const RUN_COMMAND: &str = "demo";

/// The schedule's tick: the 5-minute stages of crontab.example run on every one.
const TICK_MINUTES: i64 = 5;

/// How long the simulated stretch lasts: one week.
const SIMULATED_DAYS: i64 = 7;

/// Concurrent sends per stage run, as the shipped schedule runs them.
const STAGE_CONCURRENCY: usize = 4;

/// The slot cache is refreshed by the booking site this often.
const SLOT_REFRESH_MINUTES: i64 = 60;

/// What the simulated week added up to.
pub(super) struct Outcome {
    pub totals: Counters,
    /// Scheduled runs that did not end with exit status 0.
    pub failures: u64,
}

/// Runs the week: `hooks` (sorted by time) arrive as the clock passes them.
pub(super) async fn week(base: &Journey, hooks: &[Delivery], tz: Tz) -> anyhow::Result<Outcome> {
    let secret = Secret::new(SECRET);
    let start = week_start();
    let end = start + Duration::days(SIMULATED_DAYS);
    let mut out = Outcome {
        totals: Counters::default(),
        failures: 0,
    };
    let mut pending = hooks.iter().peekable();
    let mut day_reported = None;
    let mut t = start;
    while t <= end {
        // Webhooks that arrived since the last tick, at their own instant.
        while let Some(h) = pending.next_if(|h| h.at <= t) {
            out.totals.merge(&deliver(base, &secret, h).await?);
        }
        let minute = (t - start).num_minutes();
        if minute % SLOT_REFRESH_MINUTES == 0 {
            crate::db::demo::refresh_slot_cache(&base.db, t).await?;
        }
        let (status, run_totals) = run_schedule(base, t, minute).await?;
        if status != ExitStatus::Ok {
            out.failures += 1;
        }
        out.totals.merge(&run_totals);
        let day = t.with_timezone(&tz).format("%A %d.%m.").to_string();
        if day_reported.as_ref() != Some(&day) && t < end {
            eprintln!("demo: simulating {day} …");
            day_reported = Some(day);
        }
        t += Duration::minutes(TICK_MINUTES);
    }
    Ok(out)
}

/// One webhook through the real path, then what `serve` does after the commit, at the
/// webhook's own instant.
async fn deliver(base: &Journey, secret: &Secret, h: &Delivery) -> anyhow::Result<Counters> {
    let body = serde_json::to_vec(&h.body)?;
    let sig = crate::webhook::sign(secret, &body);
    let verification = Verification::Required(Some(secret));
    let handled = handle(&base.db, verification, &body, Some(&sig), h.at).await;
    if handled.http_status != 200 {
        anyhow::bail!(
            "demo webhook was refused: {} {}",
            handled.http_status,
            handled.message
        );
    }
    let mut j = base.clone();
    j.clock = Clock::fixed(h.at);
    let mut totals = Counters::default();
    for job in AfterCommit::of(&handled) {
        totals.merge(&job.send(&j).await?.counters);
    }
    Ok(totals)
}

/// The stages due `minute` minutes into the week, each on its cadence, run at `t` as one run.
async fn run_schedule(
    base: &Journey,
    t: DateTime<chrono::Utc>,
    minute: i64,
) -> anyhow::Result<(ExitStatus, Counters)> {
    let stages: Vec<StageRun> = Stage::ALL
        .into_iter()
        .filter(|s| minute % s.cadence().num_minutes() == 0)
        .map(|stage| StageRun {
            stage,
            opts: StageOptions {
                dry_run: false,
                limit: None,
                window: stage.default_window(),
                lock: true,
                concurrency: STAGE_CONCURRENCY,
            },
        })
        .collect();
    let mut j = base.clone();
    j.clock = Clock::fixed(t);
    j.run_id = Uuid::new_v4();
    let (status, _reports, totals) = execute(&j, RUN_COMMAND, &stages).await?;
    Ok((status, totals))
}
