//! `journeyctl status`: the journey's health for an operator at 3 a.m.: per stage its runs
//! and counters, and red flags (a stage overdue against its cadence, errors, silence, rows in
//! doubt or expired, unexplained misses, a failing reconcile). The cadence and the misses
//! come from each stage's facts (`Stage::facts`); the queries are in `db::reports`.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::json;

use crate::cli::GlobalArgs;
use crate::clock::Clock;
use crate::config::{self, parse_offset};
use crate::db::{self, reports, Db};
use crate::domain::{Counter, Counters, Stage};
use crate::exit::ExitStatus;

/// Connections `status` and `audit` open: their queries run one after another, so one is in
/// use and one spare.
pub(super) const OPERATOR_CONNECTIONS: usize = 2;

/// A stage is overdue after this many of its cadences without a completed run.
const OVERDUE_CADENCES: i32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Severity {
    Warning,
    Critical,
}

#[derive(Debug, Serialize)]
struct Flag {
    severity: Severity,
    stage: Option<&'static str>,
    message: String,
}

#[derive(Debug, Serialize)]
struct StageStatus {
    stage: &'static str,
    last_run: Option<DateTime<Utc>>,
    runs: usize,
    counters: Counters,
}

/// Flags raised by the runs of one stage in the period, newest run first.
fn stage_flags(
    stage: Stage,
    runs: &[&reports::StageRun],
    counters: &Counters,
    flags: &mut Vec<Flag>,
) {
    let name = Some(stage.as_str());
    if counters.get(Counter::Errors) > 0 {
        flags.push(Flag {
            severity: Severity::Warning,
            stage: name,
            message: format!(
                "{} error(s) counted in the period",
                counters.get(Counter::Errors)
            ),
        });
    }
    let processed = counters.get(Counter::Processed);
    let no_patient = counters.get(Counter::SkippedNoPatient);
    if processed > 0 && no_patient * 5 > processed {
        flags.push(Flag {
            severity: Severity::Warning,
            stage: name,
            message: format!(
                "{no_patient} of {processed} bookings had no patient row (over 20 %): is the \
                 booking site writing kh_patient_id, or did a lookup break?"
            ),
        });
    }
    // The failure this replaces: bookings came in, nothing went out, nobody noticed.
    if runs.len() >= 3 {
        let last3 = &runs[..3];
        let sent: u64 = last3
            .iter()
            .map(|r| r.counters.get(Counter::SentEmail))
            .sum();
        // Bookings that were test data, already handled or skipped for a counted reason
        // needed no email: only the rest make silence suspicious.
        let needing: u64 = last3
            .iter()
            .map(|r| {
                let skipped: u64 = r
                    .counters
                    .iter()
                    .filter(|(c, _)| c.is_skip())
                    .map(|(_, n)| n)
                    .sum();
                r.counters.get(Counter::Processed).saturating_sub(skipped)
            })
            .sum();
        if sent == 0 && needing > 0 {
            flags.push(Flag {
                severity: Severity::Critical,
                stage: name,
                message: format!(
                    "no email sent over the last 3 runs while {needing} booking(s) were due"
                ),
            });
        }
    }
}

/// `journeyctl status [--since DUR]`
pub(crate) async fn status(
    g: &GlobalArgs,
    clock: Clock,
    since: &str,
) -> anyhow::Result<ExitStatus> {
    let period = parse_offset("--since", since)?.abs();
    let now = clock.now();
    let db = db::connect(&config::database_url(g)?, OPERATOR_CONNECTIONS).await?;
    let mut flags = Vec::new();
    let stages = stage_statuses(&db, now, period, &mut flags).await?;
    let doubt = reports::in_doubt(&db).await?;
    delivery_flags(&db, doubt.len(), now, period, &mut flags).await?;
    let reconcile = db::reconcile::health(&db, now - period).await?;
    reconcile_flags(&reconcile, now, &mut flags);
    let report = StatusReport {
        now,
        since: now - period,
        stages,
        flags,
        doubt,
        sms_fates: reports::sms_fates(&db, now - period, now).await?,
        reconcile,
    };
    let status = match report.flags.iter().map(|f| f.severity).max() {
        None => ExitStatus::Ok,
        Some(Severity::Warning) => ExitStatus::Failed,
        Some(Severity::Critical) => ExitStatus::Config,
    };
    let word = ["OK", "WARNING", "CRITICAL"][status.code() as usize];
    if g.json {
        print_json(word, &report)?;
    } else {
        print_text(word, &report);
    }
    Ok(status)
}

/// What `status` found, as it prints it.
struct StatusReport {
    now: DateTime<Utc>,
    since: DateTime<Utc>,
    stages: Vec<StageStatus>,
    flags: Vec<Flag>,
    doubt: Vec<reports::Delivery>,
    reconcile: db::reconcile::Health,
    sms_fates: Vec<reports::SmsFate>,
}

/// Each stage's runs and counters in the period, with the flags its runs raise and the flag of
/// a stage overdue against its cadence.
async fn stage_statuses(
    db: &Db,
    now: DateTime<Utc>,
    period: Duration,
    flags: &mut Vec<Flag>,
) -> anyhow::Result<Vec<StageStatus>> {
    let runs = reports::stage_runs(db, now - period).await?;
    let last = reports::last_finished(db).await?;
    let mut stages = Vec::new();
    for stage in Stage::ALL {
        let mine: Vec<&reports::StageRun> = runs.iter().filter(|r| r.stage == stage).collect();
        let mut counters = Counters::default();
        for r in &mine {
            counters.merge(&r.counters);
        }
        stage_flags(stage, &mine, &counters, flags);
        let last_run = last.iter().find(|(s, _)| *s == stage).map(|(_, t)| *t);
        overdue_flag(stage, last_run, now, flags);
        stages.push(StageStatus {
            stage: stage.as_str(),
            last_run,
            runs: mine.len(),
            counters,
        });
    }
    Ok(stages)
}

/// A stage that never completed a run, or not for [`OVERDUE_CADENCES`] of its cadence.
fn overdue_flag(
    stage: Stage,
    last_run: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    flags: &mut Vec<Flag>,
) {
    let cadence = stage.facts().cadence;
    let message = match last_run {
        None => "never completed a run: is the schedule installed?".to_string(),
        Some(t) if now - t > cadence * OVERDUE_CADENCES => format!(
            "no completed run for {} min (runs every {} min)",
            (now - t).num_minutes(),
            cadence.num_minutes()
        ),
        Some(_) => return,
    };
    flags.push(Flag {
        severity: Severity::Critical,
        stage: Some(stage.as_str()),
        message,
    });
}

/// Flags about deliveries and runs across stages: rows in doubt, runs past their deadline,
/// expired rows, misses for no recorded reason.
async fn delivery_flags(
    db: &Db,
    in_doubt: usize,
    now: DateTime<Utc>,
    period: Duration,
    flags: &mut Vec<Flag>,
) -> anyhow::Result<()> {
    let mut flag = |severity, stage, message| {
        flags.push(Flag {
            severity,
            stage,
            message,
        })
    };
    if in_doubt > 0 {
        flag(Severity::Critical, None, format!(
            "{in_doubt} delivery(ies) in doubt: check the provider's logs, then `journeyctl resolve ID --as sent|retry`"
        ));
    }
    for (command, started) in reports::overdue_runs(db).await? {
        flag(
            Severity::Critical,
            None,
            format!(
                "a {command} run started {} is still running past its deadline and holds its \
             stage's lock: later runs of it are skipped; find the process (journey_runs) \
             and stop it",
                started.format("%Y-%m-%d %H:%M UTC")
            ),
        );
    }
    for (stage, channel, n) in reports::expired(db).await? {
        flag(
            Severity::Critical,
            Stage::parse(&stage).map(Stage::as_str),
            format!(
                "{n} {channel} delivery(ies) expired: left for retry until the window closed, \
             never sent; see `journeyctl audit`"
            ),
        );
    }
    let mut misses = 0usize;
    for stage in Stage::ALL {
        let found = reports::audit(db, stage, now - period, now).await?;
        misses += found.iter().filter(|m| m.unexplained()).count();
    }
    if misses > 0 {
        flag(
            Severity::Warning,
            None,
            format!(
            "{misses} booking(s) missed a message for no recorded reason: see `journeyctl audit`"
        ),
        );
    }
    Ok(())
}

fn print_json(word: &str, r: &StatusReport) -> anyhow::Result<()> {
    crate::outln!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "status": word,
            "now": r.now,
            "since": r.since,
            "stages": r.stages,
            "flags": r.flags,
            "in_doubt": r.doubt,
            "reconcile": r.reconcile,
            "sms_delivery": r.sms_fates,
        }))?
    );
    Ok(())
}

fn print_text(word: &str, r: &StatusReport) {
    crate::outln!(
        "JOURNEY {word} - {} flag(s) since {}",
        r.flags.len(),
        r.since.format("%Y-%m-%d %H:%M UTC")
    );
    print_stage_table(&r.stages);
    crate::outln!("  {}", reconcile_line(&r.reconcile));
    for f in &r.flags {
        crate::outln!(
            "  {:<8} {}{}",
            if f.severity == Severity::Critical {
                "CRIT"
            } else {
                "WARN"
            },
            f.stage.map(|s| format!("{s}: ")).unwrap_or_default(),
            f.message
        );
    }
    print_sms_fates(&r.sms_fates);
    for d in &r.doubt {
        crate::outln!(
            "  in doubt: {} ({} {} {} of booking {}, {})",
            d.id,
            d.stage,
            d.recipient_role,
            d.channel,
            d.booking_id,
            d.recipient.as_deref().unwrap_or("-")
        );
    }
}

fn print_stage_table(stages: &[StageStatus]) {
    crate::outln!(
        "  {:<22} {:<17} {:>4} {:>9} {:>6} {:>5} {:>6} {:>8} {:>6}",
        "stage",
        "last run (UTC)",
        "runs",
        "processed",
        "email",
        "sms",
        "retry",
        "in_doubt",
        "errors"
    );
    for s in stages {
        crate::outln!(
            "  {:<22} {:<17} {:>4} {:>9} {:>6} {:>5} {:>6} {:>8} {:>6}",
            s.stage,
            s.last_run
                .map(|t| t.format("%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "never".into()),
            s.runs,
            s.counters.get(Counter::Processed),
            s.counters.get(Counter::SentEmail),
            s.counters.get(Counter::SentSms),
            s.counters.get(Counter::RetryScheduled),
            s.counters.get(Counter::InDoubt),
            s.counters.get(Counter::Errors),
        );
    }
}

/// `status`'s reconcile flag: no successful reconcile for 2 cadences is a warning, for 6 it is
/// critical. Not set up at all (no run ever recorded: no CAL_API_KEY) raises nothing.
fn reconcile_flags(h: &db::reconcile::Health, now: DateTime<Utc>, flags: &mut Vec<Flag>) {
    if h.never_ran {
        return;
    }
    let Some(since) = h.last_success.or(h.first_run) else {
        return;
    };
    let cadence = super::reconcile::CADENCE;
    let failing = now - since;
    let severity = if failing > cadence * 6 {
        Severity::Critical
    } else if failing > cadence * 2 {
        Severity::Warning
    } else {
        return;
    };
    let last_error = h
        .last_error
        .as_deref()
        .map(|e| format!("; last error: {}", e.chars().take(200).collect::<String>()))
        .unwrap_or_default();
    flags.push(Flag {
        severity,
        stage: Some(super::reconcile::NAME),
        message: format!(
            "reconcile has not succeeded for {} minutes (runs every {} min): bookings whose \
             webhook is lost are not caught{last_error}",
            failing.num_minutes(),
            cadence.num_minutes()
        ),
    });
}

fn reconcile_line(h: &db::reconcile::Health) -> String {
    if h.never_ran {
        return "reconcile: not set up (set CAL_API_KEY and schedule it; see README)".into();
    }
    format!(
        "reconcile: last success {}, {} change(s) applied in the period (webhooks lost)",
        h.last_success
            .map(|t| t.format("%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "never".into()),
        h.changes_in_period
    )
}

/// `status`: per stage, what became of the SMS Twilio accepted in the period (from its
/// status callbacks; without `PUBLIC_CALLBACK_BASE` every SMS stays unconfirmed).
fn print_sms_fates(fates: &[reports::SmsFate]) {
    if fates.is_empty() {
        return;
    }
    crate::outln!(
        "  {:<22} {:>9} {:>11} {:>18}",
        "sms delivery",
        "delivered",
        "undelivered",
        "unconfirmed (>1h)"
    );
    for f in fates {
        crate::outln!(
            "  {:<22} {:>9} {:>11} {:>18}",
            f.stage,
            f.delivered,
            f.undelivered,
            f.unconfirmed
        );
    }
}
