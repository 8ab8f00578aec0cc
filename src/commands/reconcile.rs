//! `journeyctl reconcile`, and the same step at the head of `followups`: read the bookings
//! Cal.com created or changed since the last successful reconcile (API v2, two sweeps), and
//! apply each one the database does not show yet through the webhook's own code, as the
//! webhook that was lost would have been applied. Then send what those applies made due
//! (confirmations of bookings still ahead, cancellation notices) through the delivery ledger,
//! exactly as `webhook` and `serve` do, so a webhook arriving later sends nothing twice.
//!
//! Order of a run, and why:
//! 1. Read every page of both sweeps (and successors of moved bookings the sweeps missed)
//!    before applying anything: a run that cannot read the API applies nothing, records a
//!    failed run and an `error` event, and exits 1; the next run starts from the same point.
//! 2. Compare with the database (`calapi::plan`): only what differs is applied, so a webhook
//!    that did arrive is never re-applied in another form.
//! 3. Apply each step as a webhook body (`webhook::apply::handle`, receipt `source = 'api'`),
//!    record it in `cal_reconcile_changes` (what `audit` lists as lost webhooks).
//! 4. Send what is due. A confirmation is sent only while the session is ahead.
//!
//! The run succeeds (and the next one starts 10 minutes before its instant) only when every
//! step applied. The rules live in `calapi::plan`; this file only runs them.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::webhook::AfterCommit;
use crate::calapi::plan::{self, Change, Step};
use crate::calapi::{ApiBooking, ApiError, CalApi, Sweep};
use crate::cli::GlobalArgs;
use crate::clock::Clock;
use crate::config::{ConfigError, Settings};
use crate::db::{self, runs};
use crate::domain::{Counter, Counters, WebhookOutcome};
use crate::exit::ExitStatus;
use crate::stages::{Journey, RunControl, StageReport};
use crate::webhook::apply::{handle, public_message, Handled, Verification};

/// The command name, and the stage name its report carries inside `followups`.
pub(super) const NAME: &str = "reconcile";
/// How far back the first run reads.
pub(super) const FIRST_RUN: chrono::Duration = chrono::Duration::days(7);
/// How much of the last successful run's period each run reads again (a booking changed while
/// that run paged, or with a clock slightly off, is read again).
pub(super) const OVERLAP: chrono::Duration = chrono::Duration::minutes(10);
/// The schedule's cadence; `status` warns after 2 and turns critical after 6 without success.
pub(super) const CADENCE: chrono::Duration = chrono::Duration::minutes(5);

/// Connections of `journeyctl reconcile`: the lock's own (held for the run), the applies (one
/// at a time), and a confirmation's two messages claimed and recorded side by side.
const RECONCILE_CONNECTIONS: usize = 4;

/// Options of one reconcile.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub dry_run: bool,
    /// `--since`: read this far back instead of from the last successful run.
    pub since: Option<chrono::Duration>,
    pub page_size: u32,
}

impl Options {
    pub(crate) fn new(
        dry_run: bool,
        since: Option<&str>,
        page_size: u32,
    ) -> Result<Options, ConfigError> {
        let since = match since {
            Some(raw) => {
                let d = crate::config::parse_offset("--since", raw)?.abs();
                if d.is_zero() {
                    return Err(ConfigError::new("--since must be longer than 0 (e.g. 2h)"));
                }
                Some(d)
            }
            None => None,
        };
        if page_size == 0 || page_size > crate::calapi::MAX_TAKE {
            return Err(ConfigError::new(format!(
                "--page-size {page_size} is out of range: 1 to {}",
                crate::calapi::MAX_TAKE
            )));
        }
        Ok(Options {
            dry_run,
            since,
            page_size,
        })
    }
}

/// One applied (or, dry, planned) step, without personal data.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Applied {
    pub cal_uid: String,
    pub trigger: String,
    pub change: Change,
    /// `applied`, `duplicate` (the same body was applied before: nothing changes), `error`,
    /// `planned` (dry run).
    pub outcome: String,
}

/// What one reconcile did.
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct Report {
    pub since: Option<DateTime<Utc>>,
    pub requests: u32,
    pub rate_limited: u32,
    /// Distinct bookings the API returned.
    pub fetched: usize,
    /// Items the API returned that could not be read (no uid, unknown status).
    pub unusable: usize,
    /// Bookings that needed no step of their own: the database already showed them as the
    /// API does, or (moved-away bookings) their successor's step retires them.
    pub in_sync: usize,
    pub applied: usize,
    pub failed: usize,
    pub changes: Vec<Applied>,
    /// Why the API could not be read (nothing was applied then).
    pub error: Option<String>,
    /// Another run held the reconcile lock; nothing was done.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped_locked: bool,
    /// Confirmations and cancellation notices it sent, and errors.
    pub counters: Counters,
    #[serde(skip)]
    pub send_failures: u64,
    #[serde(skip)]
    config_error: bool,
}

impl Report {
    pub(super) fn failed(&self) -> bool {
        self.error.is_some()
            || self.failed > 0
            || self.send_failures > 0
            || self.counters.get(Counter::Errors) > 0
    }

    /// The report as one stage of a `followups` run.
    pub(super) fn as_stage(&self) -> StageReport {
        let mut r = StageReport::new(NAME);
        r.counters = self.counters.clone();
        r.failures = self.send_failures + self.failed as u64 + u64::from(self.error.is_some());
        r.skipped_locked = self.skipped_locked;
        r
    }
}

/// Runs one reconcile with the run's journey. `budget_end`: no rate-limit wait may end after
/// it. Never fails: every problem is in the report (and, unless dry, recorded).
pub(super) async fn reconcile(j: &Journey, opts: &Options, budget_end: Instant) -> Report {
    let mut report = Report::default();
    let Some(api) = j.settings.cal_api.clone() else {
        report.error = Some("CAL_API_KEY is not set".into());
        report.config_error = true;
        return report;
    };
    let lock = if opts.dry_run {
        None
    } else {
        match db::reconcile::try_lock(&j.db).await {
            Ok(Some(client)) => Some(client),
            Ok(None) => {
                log::info!("reconcile: another run holds the reconcile lock; nothing to do");
                report.skipped_locked = true;
                return report;
            }
            Err(e) => {
                fail(j, &mut report, None, public_message(&e)).await;
                return report;
            }
        }
    };
    let control = j.control.clone();
    let client = CalApi::new(api, budget_end, move || control.stopped().is_some());
    run_locked(j, opts, client, &mut report).await;
    if let Some(client) = lock {
        if let Err(e) = db::reconcile::unlock(&client).await {
            log::warn!("reconcile: {}", public_message(&e));
        }
    }
    report
}

async fn run_locked(j: &Journey, opts: &Options, mut api: CalApi, report: &mut Report) {
    let now = j.clock.now();
    let since = match since(j, opts).await {
        Ok(s) => s,
        Err(e) => {
            fail(j, report, None, public_message(&e)).await;
            return;
        }
    };
    report.since = Some(since);
    let reconcile_id = Uuid::new_v4();
    if !opts.dry_run {
        if let Err(e) = db::reconcile::start(&j.db, reconcile_id, j.run_id, now, since).await {
            fail(j, report, None, public_message(&e)).await;
            return;
        }
    }
    let id = (!opts.dry_run).then_some(reconcile_id);
    let read = read_api(&mut api, opts, since, report).await;
    report.requests = api.requests;
    report.rate_limited = api.rate_limited;
    let bookings = match read {
        Ok(b) => b,
        Err(e) => {
            report.config_error = e.is_config();
            fail(j, report, id, e.to_string()).await;
            return;
        }
    };
    let (bookings, stored) = match with_successors(j, &mut api, bookings).await {
        Ok(x) => x,
        Err(e) => {
            report.requests = api.requests;
            report.config_error = e
                .downcast_ref::<ApiError>()
                .is_some_and(ApiError::is_config);
            fail(j, report, id, public_message(&e)).await;
            return;
        }
    };
    report.requests = api.requests;
    report.rate_limited = api.rate_limited;
    report.fetched = bookings.len();
    let steps = plan::plan(&bookings, &stored);
    let touched: BTreeSet<&str> = steps.iter().map(|s| s.cal_uid.as_str()).collect();
    report.in_sync = bookings.len().saturating_sub(touched.len());
    log::info!(
        "reconcile: since {}: {} booking(s) from {} request(s), {} in sync, {} step(s) to apply",
        since.format("%Y-%m-%dT%H:%M:%SZ"),
        bookings.len(),
        report.requests,
        report.in_sync,
        steps.len()
    );
    if opts.dry_run {
        report.changes = steps
            .iter()
            .map(|s| Applied {
                cal_uid: s.cal_uid.clone(),
                trigger: s.trigger.as_str().to_string(),
                change: s.change,
                outcome: "planned".into(),
            })
            .collect();
        return;
    }
    let due = apply_all(j, reconcile_id, &steps, report).await;
    send_due(j, due, report).await;
    record_outcome(j, reconcile_id, report).await;
}

/// Closes the run's record: succeeded only when every step applied and nothing stopped it
/// (otherwise the next run reads the same period again), with an `error` event when not.
async fn record_outcome(j: &Journey, reconcile_id: Uuid, report: &mut Report) {
    let stopped = j.control.stopped();
    let succeeded = report.failed == 0 && stopped.is_none();
    let why = if report.failed > 0 {
        Some(format!(
            "{} change(s) could not be applied; the next run reads them again",
            report.failed
        ))
    } else {
        stopped.map(|r| format!("stopped ({}) before every change was applied", r.outcome()))
    };
    if let Some(why) = &why {
        error_event(j, why).await;
    }
    let recorded = db::reconcile::finish(
        &j.db,
        reconcile_id,
        &db::reconcile::Finish {
            succeeded,
            requests: report.requests,
            fetched: report.fetched,
            applied: report.applied,
            errors: report.counters.get(Counter::Errors),
            error: why.as_deref(),
        },
    )
    .await;
    if let Err(e) = recorded {
        report.counters.bump(Counter::Errors);
        log::error!("reconcile: {}", public_message(&e));
    }
}

/// Where this run reads from: `--since`, else the last successful run's instant minus the
/// overlap, else the first-run look-back.
async fn since(j: &Journey, opts: &Options) -> anyhow::Result<DateTime<Utc>> {
    let now = j.clock.now();
    if let Some(d) = opts.since {
        return Ok(now - d);
    }
    Ok(match db::reconcile::last_success(&j.db).await? {
        Some(last) => last.min(now) - OVERLAP,
        None => now - FIRST_RUN,
    })
}

/// Both sweeps, merged by uid.
async fn read_api(
    api: &mut CalApi,
    opts: &Options,
    since: DateTime<Utc>,
    report: &mut Report,
) -> Result<Vec<ApiBooking>, ApiError> {
    let mut by_uid: HashMap<String, ApiBooking> = HashMap::new();
    for sweep in Sweep::BOTH {
        let (bookings, unusable) = api.sweep(sweep, since, opts.page_size).await?;
        for line in &unusable {
            log::warn!("reconcile: {} sweep: {line}, skipped", sweep.as_str());
        }
        report.unusable += unusable.len();
        for b in bookings {
            // The same booking in both sweeps (or twice while paging): keep the newer view.
            match by_uid.get(&b.uid) {
                Some(seen) if seen.changed_at() > b.changed_at() => {}
                _ => {
                    by_uid.insert(b.uid.clone(), b);
                }
            }
        }
    }
    if report.unusable > 0 {
        report.counters.add(Counter::Errors, report.unusable as u64);
    }
    Ok(by_uid.into_values().collect())
}

/// Adds the successors of moved bookings that the sweeps did not return, and reads what the
/// database holds of every uid involved.
async fn with_successors(
    j: &Journey,
    api: &mut CalApi,
    mut bookings: Vec<ApiBooking>,
) -> anyhow::Result<(Vec<ApiBooking>, HashMap<String, plan::Stored>)> {
    let mut stored = db::reconcile::stored(&j.db, &uids(&bookings)).await?;
    let missing = plan::missing_successors(&bookings, &stored);
    if missing.is_empty() {
        return Ok((bookings, stored));
    }
    for uid in &missing {
        match api.booking(uid).await? {
            Some(b) => bookings.push(b),
            None => log::warn!(
                "reconcile: booking {uid}, which a moved booking names as its new time, is not \
                 visible to this key; the old one stays as it is"
            ),
        }
    }
    stored = db::reconcile::stored(&j.db, &uids(&bookings)).await?;
    Ok((bookings, stored))
}

/// Every uid the bookings name: their own, and those they were moved from or to.
fn uids(bookings: &[ApiBooking]) -> Vec<String> {
    let mut all: BTreeSet<String> = BTreeSet::new();
    for b in bookings {
        all.insert(b.uid.clone());
        all.extend(b.rescheduled_from_uid.clone());
        all.extend(b.rescheduled_to_uid.clone());
    }
    all.into_iter().collect()
}

/// Applies the steps in order through the webhook's code; returns what they made due.
async fn apply_all(
    j: &Journey,
    reconcile_id: Uuid,
    steps: &[Step],
    report: &mut Report,
) -> Vec<AfterCommit> {
    let now = j.clock.now();
    let mut due = Vec::new();
    for step in steps {
        if let Some(why) = j.control.stopped() {
            log::warn!(
                "reconcile: stopping ({}); the remaining changes are applied by the next run",
                why.outcome()
            );
            break;
        }
        let handled = handle(&j.db, Verification::Skipped, &step.body, None, now).await;
        match handled.outcome {
            WebhookOutcome::Applied => {
                record_applied(j, reconcile_id, step, &handled, report).await;
                due.extend(AfterCommit::of(&handled));
            }
            WebhookOutcome::Duplicate => log::info!(
                "reconcile: {} {}: already applied in this form; the database keeps a state \
                 the lifecycle does not leave",
                step.trigger,
                step.cal_uid
            ),
            other => {
                report.failed += 1;
                report.counters.bump(Counter::Errors);
                log::error!(
                    "reconcile: {} {}: {} ({other})",
                    step.trigger,
                    step.cal_uid,
                    handled.message,
                );
            }
        }
        report.changes.push(Applied {
            cal_uid: step.cal_uid.clone(),
            trigger: step.trigger.as_str().to_string(),
            change: step.change,
            outcome: handled.outcome.as_str().to_string(),
        });
    }
    due
}

/// Counts an applied step and records it in `cal_reconcile_changes` (what `audit` lists as
/// a lost webhook); a failure to record is counted as an error, the step stays applied.
async fn record_applied(
    j: &Journey,
    reconcile_id: Uuid,
    step: &Step,
    handled: &Handled,
    report: &mut Report,
) {
    report.applied += 1;
    report.counters.bump(Counter::Processed);
    let recorded = db::reconcile::record_change(
        &j.db,
        &db::reconcile::Change {
            reconcile_id,
            cal_uid: &step.cal_uid,
            receipt_id: handled.receipt_id,
            trigger: step.trigger.as_str(),
            change: change_name(step.change),
            changed_at: step.changed_at,
            found_at: j.clock.now(),
        },
    )
    .await;
    if let Err(e) = recorded {
        report.counters.bump(Counter::Errors);
        log::error!("reconcile: {}", public_message(&e));
    }
    log::info!(
        "reconcile: {} {} ({}): {}",
        step.trigger,
        step.cal_uid,
        change_name(step.change),
        handled.message
    );
}

fn change_name(c: Change) -> &'static str {
    match c {
        Change::New => "new",
        Change::Status => "status",
        Change::Times => "times",
        Change::Moved => "moved",
    }
}

/// Sends what the applies made due, once per booking: confirmations only for bookings still
/// active with the session ahead (judged after every step, so a booking moved or cancelled
/// later in the same run is not confirmed), and the cancellation notices.
async fn send_due(j: &Journey, due: Vec<AfterCommit>, report: &mut Report) {
    let mut confirm: Vec<Uuid> = Vec::new();
    let mut notify: Vec<Uuid> = Vec::new();
    for job in due {
        match job {
            AfterCommit::Confirm(id) if !confirm.contains(&id) => confirm.push(id),
            AfterCommit::NotifyCancelled(id) if !notify.contains(&id) => notify.push(id),
            _ => {}
        }
    }
    if !confirm.is_empty() {
        match db::reconcile::confirmable(&j.db, &confirm, j.clock.now()).await {
            Ok(ids) => confirm = ids,
            Err(e) => {
                report.counters.bump(Counter::Errors);
                log::error!(
                    "reconcile: {}; confirmation-recovery sends them",
                    public_message(&e)
                );
                confirm.clear();
            }
        }
    }
    let jobs = confirm
        .into_iter()
        .map(AfterCommit::Confirm)
        .chain(notify.into_iter().map(AfterCommit::NotifyCancelled));
    for job in jobs {
        if j.control.stopped().is_some() {
            // Not claimed: confirmation-recovery sends it.
            break;
        }
        match job.send(j).await {
            Ok(r) => {
                // `processed` stays the number of changes applied.
                for (c, n) in r.counters.iter().filter(|(c, _)| *c != Counter::Processed) {
                    report.counters.add(c, n);
                }
                report.send_failures += r.failures;
            }
            Err(e) => {
                report.counters.bump(Counter::Errors);
                log::error!("reconcile: {job:?}: {}", public_message(&e));
            }
        }
    }
}

/// A run that could not read the API (or the database): logged, an `error` event, the run
/// recorded as failed (unless dry). Nothing was applied.
async fn fail(j: &Journey, report: &mut Report, reconcile_id: Option<Uuid>, why: String) {
    log::error!("reconcile: {why}");
    report.counters.bump(Counter::Errors);
    report.error = Some(why.clone());
    let Some(id) = reconcile_id else {
        return;
    };
    error_event(j, &why).await;
    let recorded = db::reconcile::finish(
        &j.db,
        id,
        &db::reconcile::Finish {
            succeeded: false,
            requests: report.requests,
            fetched: report.fetched,
            applied: 0,
            errors: report.counters.get(Counter::Errors),
            error: Some(&why),
        },
    )
    .await;
    if let Err(e) = recorded {
        log::error!("reconcile: {}", public_message(&e));
    }
}

async fn error_event(j: &Journey, why: &str) {
    let props = json!({"source": "reconcile", "reason": why, "booking_id": null,
                       "run_id": j.run_id});
    if let Err(e) = runs::error_event(&j.db, &props).await {
        log::error!(
            "reconcile: failed to write the error event: {}",
            public_message(&e)
        );
    }
}

/// `journeyctl reconcile [--dry-run] [--since DUR]`
pub(crate) async fn run(
    g: &GlobalArgs,
    settings: Settings,
    clock: Clock,
    opts: Options,
    deadline: Duration,
) -> anyhow::Result<ExitStatus> {
    if settings.cal_api.is_none() {
        return Err(ConfigError::new(
            "CAL_API_KEY is not set: reconcile reads Cal.com's API v2 with it (create a key in \
             Cal.com under Settings → Developer → API keys)",
        )
        .into());
    }
    let control = RunControl::new(super::stage::DRAIN).with_deadline(deadline);
    let signals = crate::stages::control::listen_for_signals(control.clone())
        .context("Failed to install the SIGTERM/SIGINT handlers")?;
    let timer = crate::stages::control::arm_deadline(control.clone(), deadline);
    let budget_end = Instant::now() + deadline;
    let mut j = super::journey(g, settings, clock, opts.dry_run, RECONCILE_CONNECTIONS).await?;
    j.control = control;
    let started = Instant::now();
    if !opts.dry_run {
        record_start(&j).await?;
    }
    let report = reconcile(&j, &opts, budget_end).await;
    timer.abort();
    signals.abort();
    let status = match j.control.stopped() {
        Some(crate::stages::StopReason::Terminate) => ExitStatus::Terminated,
        Some(crate::stages::StopReason::Interrupt) => ExitStatus::Interrupted,
        _ if report.config_error => ExitStatus::Config,
        Some(crate::stages::StopReason::Deadline) => ExitStatus::Failed,
        None if report.failed() => ExitStatus::Failed,
        None => ExitStatus::Ok,
    };
    if !opts.dry_run {
        record_finish(&j, &report, status, started.elapsed()).await?;
    }
    print(g.json, &j, &opts, &report)?;
    Ok(status)
}

async fn record_start(j: &Journey) -> anyhow::Result<()> {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    runs::start(
        &j.db,
        &runs::RunStart {
            run_id: j.run_id,
            command: NAME,
            now: j.clock.now(),
            host: &host,
            application_name: &j.application_name,
            deadline: j.control.deadline().map(|d| d + j.control.drain()),
        },
    )
    .await
    .map_err(|e| {
        ConfigError::new(format!(
            "{e:#} (has `journeyctl migrate` been run against this database?)"
        ))
    })?;
    if let Err(e) = runs::close_dangling(&j.db, j.run_id).await {
        log::error!("{e:#}");
    }
    Ok(())
}

async fn record_finish(
    j: &Journey,
    report: &Report,
    status: ExitStatus,
    took: Duration,
) -> anyhow::Result<()> {
    let stage = report.as_stage();
    let stages = json!([{"stage": NAME, "counters": stage.counters,
                         "skipped_locked": report.skipped_locked}]);
    let totals = serde_json::to_value(&stage.counters)?;
    let outcome = match j.control.stopped() {
        Some(why) => why.outcome(),
        None if report.skipped_locked => "skipped",
        None => "completed",
    };
    let props = json!({
        "command": NAME,
        "run_id": j.run_id,
        "now": j.clock.now(),
        "stages": stages,
        "totals": totals,
        "duration_ms": took.as_millis() as u64,
        "reconcile": summary(report),
    });
    runs::finish(
        &j.db,
        j.run_id,
        &stages,
        &totals,
        status.code() as i32,
        outcome,
        &props,
    )
    .await
    .context("Failed to record the run")
}

/// The report without the per-booking list (for the run's event).
fn summary(r: &Report) -> serde_json::Value {
    json!({"since": r.since, "requests": r.requests, "rate_limited": r.rate_limited,
           "fetched": r.fetched, "unusable": r.unusable, "in_sync": r.in_sync,
           "applied": r.applied, "failed": r.failed, "error": r.error})
}

fn print(json_out: bool, j: &Journey, opts: &Options, r: &Report) -> anyhow::Result<()> {
    if json_out {
        let stage = r.as_stage();
        let report = json!({
            "run_id": j.run_id,
            "command": NAME,
            "now": j.clock.now(),
            "dry_run": opts.dry_run,
            "stages": [{"stage": NAME, "counters": stage.counters, "planned": [],
                        "reconcile": r}],
            "totals": stage.counters,
        });
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    crate::outln!(
        "journeyctl reconcile{}  run {}  now {}",
        if opts.dry_run {
            " (dry run: nothing applied, sent or written)"
        } else {
            ""
        },
        j.run_id,
        j.clock.now().format("%Y-%m-%dT%H:%M:%SZ")
    );
    if r.skipped_locked {
        crate::outln!("  skipped: another reconcile run holds the lock");
        return Ok(());
    }
    if let Some(since) = r.since {
        crate::outln!(
            "  since {}  requests={} fetched={} in_sync={} applied={} failed={} unusable={}",
            since.format("%Y-%m-%dT%H:%M:%SZ"),
            r.requests,
            r.fetched,
            r.in_sync,
            r.applied,
            r.failed,
            r.unusable
        );
    }
    for c in &r.changes {
        crate::outln!(
            "  {:<10} {:<20} {} ({:?})",
            c.outcome,
            c.trigger,
            c.cal_uid,
            c.change
        );
    }
    let sent: Vec<String> = r
        .counters
        .iter()
        .filter(|(c, n)| *n > 0 && *c != Counter::Processed)
        .map(|(c, n)| format!("{}={n}", c.as_str()))
        .collect();
    if !sent.is_empty() {
        crate::outln!("  {}", sent.join(" "));
    }
    if let Some(e) = &r.error {
        crate::outln!("  FAILED: {e}");
    }
    Ok(())
}
