//! Stage commands (`reminder-24h`, …, `followups`): build the run's `Journey`, run the stages
//! in order, record the run, print the report. A failing stage does not stop the next one;
//! the exit status is the worst of them.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use uuid::Uuid;

use crate::cli::GlobalArgs;
use crate::clock::Clock;
use crate::config::{self, ConfigError, Settings};
use crate::db::{self, ledger, runs};
use crate::domain::{Channel, Counter, Counters, Stage};
use crate::exit::ExitStatus;
use crate::notify::Senders;
use crate::stages::{run_prepared, Journey, RunControl, StageOptions, StageReport, StopReason};
use crate::templates::Templates;

/// One stage with its options.
pub(crate) struct StageRun {
    pub stage: Stage,
    pub opts: StageOptions,
}

/// Builds what every sending command needs: pool, templates, transports.
pub(crate) async fn journey(
    g: &GlobalArgs,
    settings: Settings,
    clock: Clock,
    dry_run: bool,
    pool_size: usize,
) -> anyhow::Result<Journey> {
    let url = config::database_url(g)?;
    let senders = Senders::from_settings(&settings, dry_run)?;
    if !senders.enabled(Channel::Sms) {
        log::warn!(
            "SMS is off (neither TWILIO_* nor SMS_OUTBOX_DIR is set): patients with only a phone \
             number are counted as skipped_no_contact"
        );
    }
    let templates = Templates::load(settings.templates_dir.as_deref(), settings.timezone)
        .map_err(|e| ConfigError::new(format!("templates cannot be loaded: {e:#}")))?;
    let message_id_domain = settings
        .email
        .from
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.domain().to_string())
        .unwrap_or_else(|_| "journeyctl.local".to_string());
    let run_id = Uuid::new_v4();
    let application_name = ledger::process_application_name();
    let db = db::connect_as(&url, pool_size, &application_name).await?;
    Ok(Journey {
        db,
        settings: Arc::new(settings),
        templates: Arc::new(templates),
        senders,
        clock,
        run_id,
        application_name,
        message_id_domain,
        control: RunControl::new(DRAIN),
    })
}

/// How long in-flight sends may take once a run is told to stop (`stages::control`).
pub(super) const DRAIN: std::time::Duration = crate::stages::control::DEFAULT_DRAIN;

/// Sends at once when no stage names its own (a run with no stages): the CLI's default.
const DEFAULT_CONCURRENCY: usize = 8;

/// Connections beyond one per concurrent send: the stage's own connection (it holds the
/// stage lock and selects the pages), one for the batch claims and one for their records.
/// (Batched sends hold none, which leaves room for the send-started stamps' connection and
/// the next page's lookups.)
const EXTRA_CONNECTIONS: usize = 3;

/// One stage command as the operator asked for it: its name (`reminder-24h`, `followups`),
/// the stages it runs, and the run's limits and extras.
pub(crate) struct StageCommand<'a> {
    pub name: &'a str,
    pub stages: Vec<StageRun>,
    pub metrics_file: Option<&'a std::path::Path>,
    /// The run's deadline (`--run-deadline`).
    pub deadline: std::time::Duration,
    /// Reconcile with Cal.com first (`followups` with CAL_API_KEY set).
    pub reconcile: Option<super::ReconcileOptions>,
}

/// Runs the given stages as one run named `cmd.name`, and prints the report.
pub(crate) async fn run(
    g: &GlobalArgs,
    settings: Settings,
    clock: Clock,
    cmd: StageCommand<'_>,
) -> anyhow::Result<ExitStatus> {
    let StageCommand {
        name: command,
        stages,
        metrics_file,
        deadline,
        reconcile,
    } = cmd;
    let dry_run = stages.iter().any(|s| s.opts.dry_run);
    let concurrency = stages
        .iter()
        .map(|s| s.opts.concurrency)
        .max()
        .unwrap_or(DEFAULT_CONCURRENCY);
    // Signals are caught from here on: a SIGTERM while connecting stops the run before it
    // claims anything, instead of killing it half-way.
    let control = RunControl::new(DRAIN).with_deadline(deadline);
    let signals = crate::stages::control::listen_for_signals(control.clone())
        .context("Failed to install the SIGTERM/SIGINT handlers")?;
    let timer = crate::stages::control::arm_deadline(control.clone(), deadline);
    let pool_size = concurrency + EXTRA_CONNECTIONS;
    let mut j = journey(g, settings, clock, dry_run, pool_size).await?;
    j.control = control;
    // Reconcile gets half the run: the stages after it must still have time to send.
    let reconcile = reconcile.map(|o| (o, Instant::now() + deadline / 2));
    let executed = execute_with(&j, command, &stages, reconcile.as_ref()).await;
    timer.abort();
    signals.abort();
    let (status, reports, totals) = executed?;
    if let Some(path) = metrics_file {
        let stages: Vec<(&str, &Counters)> =
            reports.iter().map(|r| (r.stage, &r.counters)).collect();
        let text = crate::metrics::render(command, j.clock.now(), dry_run, status, &stages);
        crate::metrics::write_atomically(path, &text)
            .with_context(|| format!("Failed to write the metrics file {}", path.display()))?;
    }
    if g.json {
        let report = json!({
            "run_id": j.run_id,
            "command": command,
            "now": j.clock.now(),
            "dry_run": dry_run,
            "stages": reports,
            "totals": totals,
        });
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(command, &j, dry_run, &reports, &totals);
    }
    Ok(status)
}

/// Runs the stages in order with `j` and records the run (unless dry). A failing stage does
/// not stop the next; the status is the worst of them.
pub(super) async fn execute(
    j: &Journey,
    command: &str,
    stages: &[StageRun],
) -> anyhow::Result<(ExitStatus, Vec<StageReport>, Counters)> {
    execute_with(j, command, stages, None).await
}

/// [`execute`], with `reconcile` first when given (`followups` with CAL_API_KEY set), so no
/// stage sends on a booking whose cancellation or reschedule webhook was lost.
pub(super) async fn execute_with(
    j: &Journey,
    command: &str,
    stages: &[StageRun],
    reconcile: Option<&(super::ReconcileOptions, Instant)>,
) -> anyhow::Result<(ExitStatus, Vec<StageReport>, Counters)> {
    let started = Instant::now();
    let dry_run = stages.iter().any(|s| s.opts.dry_run);
    if !dry_run {
        record_start(j, command).await?;
    }
    let mut reports: Vec<StageReport> = Vec::new();
    if let Some((opts, budget_end)) = reconcile {
        if j.control.stopped().is_none() {
            let r = super::reconcile::reconcile(j, opts, *budget_end).await;
            reports.push(r.as_stage());
        }
    }
    let runs: Vec<_> = stages.iter().map(|s| (s.stage, &s.opts)).collect();
    let prepared = crate::stages::prepare(j, &runs).await;
    for (i, s) in stages.iter().enumerate() {
        if let Some(why) = j.control.stopped() {
            log::warn!(
                "{}: not started, the run is stopping ({})",
                s.stage,
                why.outcome()
            );
            continue;
        }
        log::debug!("{}: starting", s.stage);
        let p = prepared.as_ref().and_then(|p| p.get(i).copied());
        match run_prepared(j, s.stage, &s.opts, p).await {
            Ok(r) => reports.push(r),
            Err(e) => {
                log::error!("{}: {e:#}", s.stage);
                if !dry_run {
                    let props = json!({"source": format!("stage:{}", s.stage.ledger_stage()),
                                       "reason": format!("{e:#}"), "booking_id": null,
                                       "stage": s.stage.as_str(), "run_id": j.run_id});
                    if let Err(e2) = runs::error_event(&j.db, &props).await {
                        log::error!("failed to write an error event: {e2:#}");
                    }
                }
                let mut r = StageReport::new(s.stage.as_str());
                r.counters.bump(Counter::Errors);
                reports.push(r);
            }
        }
    }
    let mut totals = Counters::default();
    for r in &reports {
        totals.merge(&r.counters);
    }
    let (mut status, outcome) = judge(j, &reports);
    if !dry_run {
        let duration = started.elapsed();
        let recorded = record_finish(j, command, &reports, &totals, status, outcome, duration);
        if let Err(e) = recorded.await {
            if runs::reachable(&j.db).await {
                return Err(e);
            }
            // The summary of what was done is still printed; the next run closes this
            // run's record, and the ledger judges its deliveries.
            log::error!(
                "{e:#}: the database was lost during the run; its record stays open until the \
                 next run closes it"
            );
            status = ExitStatus::Config;
        }
    }
    Ok((status, reports, totals))
}

/// Opens the run's record, and closes those of earlier runs that died without closing theirs.
async fn record_start(j: &Journey, command: &str) -> anyhow::Result<()> {
    let host = hostname();
    let start = runs::RunStart {
        run_id: j.run_id,
        command,
        now: j.clock.now(),
        host: &host,
        application_name: &j.application_name,
        deadline: j.control.deadline().map(|d| d + j.control.drain()),
    };
    runs::start(&j.db, &start).await.map_err(|e| {
        ConfigError::new(format!(
            "{e:#} (has `journeyctl migrate` been run against this database?)"
        ))
    })?;
    match runs::close_dangling(&j.db, j.run_id).await {
        Ok(0) => {}
        Ok(n) => log::warn!(
            "closed the records of {n} earlier run(s) that ended without recording it \
             (killed, or cut off from the database)"
        ),
        Err(e) => log::error!("{e:#}"),
    }
    Ok(())
}

/// The run's exit status and its `journey_runs.outcome`. A signal decides the status (what
/// systemd and shells expect), then a channel stopped for our own settings (2), then the
/// deadline or failed deliveries (1).
fn judge(j: &Journey, reports: &[StageReport]) -> (ExitStatus, &'static str) {
    let misconfigured = j.control.misconfigured();
    for (channel, setting) in &misconfigured {
        log::error!(
            "the {channel} channel was stopped because of our {setting}; fix \
             {setting} (the messages stay due and the next run sends them)"
        );
    }
    let stopped = j.control.stopped();
    let status = match stopped {
        Some(StopReason::Terminate) => ExitStatus::Terminated,
        Some(StopReason::Interrupt) => ExitStatus::Interrupted,
        _ if !misconfigured.is_empty() => ExitStatus::Config,
        Some(StopReason::Deadline) => ExitStatus::Failed,
        None if reports.iter().any(StageReport::failed) => ExitStatus::Failed,
        None => ExitStatus::Ok,
    };
    let outcome = match stopped {
        Some(why) => why.outcome(),
        None if !reports.is_empty() && reports.iter().all(|r| r.skipped_locked) => "skipped",
        None => "completed",
    };
    (status, outcome)
}

/// Closes the run's record and writes its `cal_booking_followups_completed` event.
async fn record_finish(
    j: &Journey,
    command: &str,
    reports: &[StageReport],
    totals: &Counters,
    status: ExitStatus,
    outcome: &str,
    duration: std::time::Duration,
) -> anyhow::Result<()> {
    // A stage skipped for the lock is not a completed run of it (`status` reads this flag).
    let stages_json = serde_json::to_value(
        reports
            .iter()
            .map(|r| {
                json!({"stage": r.stage, "counters": r.counters,
                       "skipped_locked": r.skipped_locked})
            })
            .collect::<Vec<_>>(),
    )?;
    let totals_json = serde_json::to_value(totals)?;
    let props = json!({
        "command": command,
        "run_id": j.run_id,
        "now": j.clock.now(),
        "stages": stages_json,
        "totals": totals_json,
        "duration_ms": duration.as_millis() as u64,
    });
    runs::finish(
        &j.db,
        j.run_id,
        &stages_json,
        &totals_json,
        status.code() as i32,
        outcome,
        &props,
    )
    .await
    .context("Failed to record the run")
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn print_table(
    command: &str,
    j: &Journey,
    dry_run: bool,
    reports: &[StageReport],
    totals: &Counters,
) {
    crate::outln!(
        "journeyctl {command}{}  run {}  now {}",
        if dry_run {
            " (dry run: nothing sent, nothing written)"
        } else {
            ""
        },
        j.run_id,
        j.clock.now().format("%Y-%m-%dT%H:%M:%SZ")
    );
    for r in reports {
        if r.skipped_locked {
            crate::outln!(
                "  {:<22} skipped: another run holds this stage's lock",
                r.stage
            );
            continue;
        }
        let nonzero: Vec<String> = r
            .counters
            .iter()
            .filter(|(c, n)| *n > 0 && *c != Counter::Processed)
            .map(|(c, n)| format!("{}={n}", c.as_str()))
            .collect();
        crate::outln!(
            "  {:<22} processed={:<4} {}",
            r.stage,
            r.counters.get(Counter::Processed),
            if nonzero.is_empty() {
                "nothing due".to_string()
            } else {
                nonzero.join(" ")
            }
        );
        for p in &r.planned {
            crate::outln!(
                "      would send {} to {} {} (booking {}){}",
                p.channel,
                p.recipient_role,
                p.recipient,
                p.cal_uid,
                p.subject
                    .as_deref()
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default()
            );
        }
    }
    if reports.len() > 1 {
        crate::outln!(
            "  {:<22} processed={:<4} sent_email={} sent_sms={} errors={}",
            "total",
            totals.get(Counter::Processed),
            totals.get(Counter::SentEmail),
            totals.get(Counter::SentSms),
            totals.get(Counter::Errors)
        );
    }
}
