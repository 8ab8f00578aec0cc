//! A stage run over its window: take the stage lock (`db::locks`), tidy the ledger (abandoned
//! claims, walk-ins, expired retries), then select the due bookings page by page and hand each
//! page to [`super::process`]. Memory stays bounded by one page.

use chrono::{DateTime, Utc};

use super::confirmation_recovery::Origin;
use super::journey::{Journey, Pass, StageOptions};
use super::report::{count_error, record_error, ErrorAt, StageReport};
use crate::db::{bookings, ledger, locks, tidy};
use crate::domain::{Counter, Stage};

/// Runs one stage over its window, on one connection: it takes the stage lock (a session
/// lock, so the connection stays checked out for the stage) and does the stage's own queries,
/// so a run with nothing due opens no second connection.
pub async fn run_stage(
    j: &Journey,
    stage: Stage,
    opts: &StageOptions,
) -> anyhow::Result<StageReport> {
    run_prepared(j, stage, opts, None).await
}

/// [`run_stage`] after [`prepare`]: the ledger is tidied already (its counts go to this
/// stage's report), and a stage with nothing due selects nothing.
pub(crate) async fn run_prepared(
    j: &Journey,
    stage: Stage,
    opts: &StageOptions,
    prepared: Option<Prepared>,
) -> anyhow::Result<StageReport> {
    let mut report = StageReport::new(stage.as_str());
    let live = j.db.client().await?;
    let run = Run {
        stage,
        opts,
        prepared,
    };
    if !opts.lock {
        return run_locked(j, &run, &live, &mut report)
            .await
            .map(|()| report);
    }
    // Nothing due: the lock is only checked (taken and released in one statement), so a
    // run of a stage another run holds still reports itself skipped.
    let nothing_due = matches!(prepared, Some(Prepared { due: false, .. }));
    let looked = prepared.and_then(|p| p.lock_free);
    let free = match (nothing_due, looked) {
        (true, Some(free)) => free,
        (true, None) => locks::probe_stage_lock(&live, stage).await?,
        (false, _) => locks::try_stage_lock(&live, stage).await?,
    };
    if !free {
        log::info!("{stage}: another run holds the stage lock; nothing to do");
        report.skipped_locked = true;
        // What this run's tidying settled for the stage is still this run's to count.
        if let Some(p) = prepared {
            count_tidied(stage, p, &mut report);
        }
        return Ok(report);
    }
    let result = run_locked(j, &run, &live, &mut report).await;
    if nothing_due {
        return result.map(|()| report);
    }
    if let Err(e) = locks::unlock_stage(&live, stage).await {
        log::warn!("{stage}: failed to release the stage lock: {e:#}");
    }
    result.map(|()| report)
}

/// One stage of a run, and what [`prepare`] found for it.
struct Run<'a> {
    stage: Stage,
    opts: &'a StageOptions,
    prepared: Option<Prepared>,
}

async fn run_locked(
    j: &Journey,
    run: &Run<'_>,
    live: &deadpool_postgres::ClientWrapper,
    report: &mut StageReport,
) -> anyhow::Result<()> {
    let (stage, opts) = (run.stage, run.opts);
    let now = j.clock.now();
    let (from, to) = (now + opts.window.0, now + opts.window.1);
    if let Some(p) = run.prepared {
        count_tidied(stage, p, report);
    }
    if !opts.dry_run && run.prepared.is_none() {
        tidy(j, stage, live, (now, from), report).await;
    }
    let total = match run.prepared {
        Some(Prepared { due: false, .. }) => 0,
        _ => match select_pages(j, stage, opts, live, (from, to), report).await {
            Some(total) => total,
            None => return Ok(()),
        },
    };
    log::info!(
        "{stage}: {total} booking(s) due between {} and {}",
        from.format("%Y-%m-%d %H:%M"),
        to.format("%Y-%m-%d %H:%M")
    );
    Ok(())
}

/// Before selecting: claims a dead run left `sending` become `in_doubt`, walk-in bookings
/// whose person now exists get their patient, and retries this window would never select
/// again end visibly as `expired`. `at` is (now, the window's start).
async fn tidy(
    j: &Journey,
    stage: Stage,
    live: &deadpool_postgres::ClientWrapper,
    at: (DateTime<Utc>, DateTime<Utc>),
    report: &mut StageReport,
) {
    let here = ErrorAt::stage(stage);
    match ledger::promote_abandoned_on(live, stage.ledger_stage()).await {
        Ok(n) => count_in_doubt(stage, n, report),
        Err(e) => count_error(j, report, false, here, &format!("{e:#}")).await,
    }
    // Walk-in bookings whose person now exists get their patient before selecting, so
    // every stage (followups included) sees the row. One statement for all of them.
    match bookings::link_walk_ins_on(live).await {
        Ok(0) => {}
        Ok(n) => log::info!("{stage}: linked {n} walk-in booking(s) to their people rows"),
        Err(e) => count_error(j, report, false, here, &format!("{e:#}")).await,
    }
    // Retries no run of this window would select again end visibly, not silently.
    match ledger::expire_closed_on(live, stage, at.0, at.1).await {
        Ok(n) => count_expired(stage, n, report),
        Err(e) => count_error(j, report, false, here, &format!("{e:#}")).await,
    }
}

fn count_in_doubt(stage: Stage, n: u64, report: &mut StageReport) {
    if n > 0 {
        report.counters.add(Counter::InDoubt, n);
        log::warn!("{stage}: {n} delivery(ies) left in 'sending' by a dead run are now in_doubt; see `journeyctl status`");
    }
}

fn count_expired(stage: Stage, n: u64, report: &mut StageReport) {
    if n > 0 {
        report.counters.add(Counter::Expired, n);
        report.failures += n;
        log::warn!("{stage}: {n} delivery(ies) left for retry expired: their window closed before they could be sent; see `journeyctl audit`");
    }
}

fn count_tidied(stage: Stage, p: Prepared, report: &mut StageReport) {
    if p.error {
        report.error();
    }
    count_in_doubt(stage, p.in_doubt, report);
    count_expired(stage, p.expired, report);
}

/// What [`prepare`] found for one stage.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Prepared {
    in_doubt: u64,
    expired: u64,
    /// The stage's selection would find a booking.
    due: bool,
    /// Preparing failed (recorded already): counted on this stage's report.
    error: bool,
    /// Nothing due: whether the stage's lock was free when [`prepare`] looked at every such
    /// stage's lock at once (`None`: not looked at, the stage looks itself).
    lock_free: Option<bool>,
}

/// Before the stages of a run: asks in one cheap statement which stages have anything due
/// and whether anything needs tidying (`bookings::survey`); only then tidies the ledger for
/// all of them in one statement (unless a dry run) and asks again, since tidying can give a
/// claim back for retry. A run with nothing to do costs one statement. A failure is recorded
/// and counted once (on the first stage) and loses nothing: without the survey's answer the
/// run tidies and every stage selects; a failed tidying is left to the next run. `None`
/// without a connection (each stage then fails to get one and counts that, and tidies on its
/// own).
pub(crate) async fn prepare(j: &Journey, runs: &[(Stage, &StageOptions)]) -> Option<Vec<Prepared>> {
    let (first, _) = runs.first()?;
    let live = j.db.client().await.ok()?;
    let now = j.clock.now();
    let dry_run = runs.iter().any(|(_, o)| o.dry_run);
    let windows: Vec<_> = runs
        .iter()
        .map(|(s, o)| (*s, now + o.window.0, now + o.window.1))
        .collect();
    let facts: Vec<_> = windows
        .iter()
        .map(|(s, from, to)| (s.facts(), *from, *to))
        .collect();
    let mut prepared = vec![
        Prepared {
            due: true,
            ..Prepared::default()
        };
        runs.len()
    ];
    let mut failed = None;
    let mut survey = bookings::survey(&live, now, &facts).await;
    if !dry_run && survey.as_ref().map_or(true, |s| s.tidy) {
        let edges: Vec<_> = windows.iter().map(|(s, from, _)| (*s, *from)).collect();
        match tidy::tidy_run(&live, now, &edges).await {
            Ok(t) => {
                if t.linked > 0 {
                    log::info!(
                        "linked {} walk-in booking(s) to their people rows",
                        t.linked
                    );
                }
                for (i, p) in prepared.iter_mut().enumerate() {
                    p.in_doubt = t.in_doubt.get(i).copied().unwrap_or(0);
                    p.expired = t.expired.get(i).copied().unwrap_or(0);
                }
            }
            // Counted once, here; the next run tidies (nothing waits on it: the selection
            // never picks a row in `sending`, `in_doubt` or a closed window).
            Err(e) => failed = Some(format!("{e:#}; the next run tidies")),
        }
        if survey.is_ok() {
            survey = bookings::survey(&live, now, &facts).await;
        }
    }
    match survey {
        Ok(s) => prepared.iter_mut().zip(s.due).for_each(|(p, d)| p.due = d),
        Err(e) => failed = Some(format!("{e:#}; every stage selects")),
    }
    look_at_locks(&live, runs, &mut prepared).await;
    if let Some(why) = failed {
        record_error(j, dry_run, ErrorAt::stage(*first), &why).await;
        prepared[0].error = true;
    }
    Some(prepared)
}

/// The locks of the stages with nothing due, in one statement instead of one per stage (a run
/// with nothing to do is mostly round trips). A failure is not counted: each stage then looks
/// at its own lock and meets the error there.
async fn look_at_locks(
    live: &deadpool_postgres::ClientWrapper,
    runs: &[(Stage, &StageOptions)],
    prepared: &mut [Prepared],
) {
    let idle: Vec<usize> = (0..runs.len())
        .filter(|&i| runs[i].1.lock && !prepared[i].due)
        .collect();
    if idle.len() < 2 {
        return;
    }
    let stages: Vec<Stage> = idle.iter().map(|&i| runs[i].0).collect();
    match locks::probe_stage_locks(live, &stages).await {
        Ok(free) => {
            for (&i, f) in idle.iter().zip(free) {
                prepared[i].lock_free = Some(f);
            }
        }
        Err(e) => log::debug!("each stage looks at its own lock: {e:#}"),
    }
}

/// Keyset-paginated chunks: select a page and look its patients, ledger rows and opt-outs
/// up, then process it (plan, claim, send, record) while the next page, after the last
/// booking of this one, is selected and looked up. Returns how many bookings were selected;
/// `None` when a selection failed (counted and recorded).
async fn select_pages(
    j: &Journey,
    stage: Stage,
    opts: &StageOptions,
    live: &deadpool_postgres::ClientWrapper,
    window: (DateTime<Utc>, DateTime<Utc>),
    report: &mut StageReport,
) -> Option<usize> {
    let pass = Pass {
        stage,
        origin: Origin::Recovery,
        dry_run: opts.dry_run,
        concurrency: opts.concurrency,
    };
    let now = j.clock.now();
    let page_size = |left: Option<i64>| left.map_or(bookings::PAGE, |l| l.min(bookings::PAGE));
    // One page selected and looked up: its bookings, where the next page starts, its lookups.
    let fetch = |after: Option<(DateTime<Utc>, uuid::Uuid)>, page: i64| async move {
        let (due, next) =
            bookings::select_due_page(live, stage.facts(), now, window, after, page).await?;
        let loaded = super::process::load(j, stage, &due).await;
        anyhow::Ok((due, next, loaded))
    };
    let mut left: Option<i64> = opts.limit.map(i64::from);
    let mut page = page_size(left);
    if page <= 0 {
        return Some(0);
    }
    let mut fetched = Some(fetch(None, page).await);
    let mut total = 0usize;
    while let Some(this) = fetched.take() {
        let (due, next, loaded) = match this {
            Ok(f) => f,
            Err(e) => {
                let why = format!("{e:#}");
                count_error(j, report, opts.dry_run, ErrorAt::stage(stage), &why).await;
                return None;
            }
        };
        let n = due.len();
        total += n;
        left = left.map(|l| l - n as i64);
        let more = (n as i64) == page;
        page = page_size(left);
        let processing = super::process::process_loaded(j, pass, due, loaded, report);
        if !more || page <= 0 || j.control.stopped().is_some() {
            processing.await;
            break;
        }
        let (_, following) = futures::future::join(processing, fetch(next, page)).await;
        // A run told to stop while this page was sent takes no further page.
        if j.control.stopped().is_none() {
            fetched = Some(following);
        }
    }
    Some(total)
}
