//! `status`, `audit`, `resolve`: what an operator runs to see that the journey works and to
//! settle what needs a human.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::cli::GlobalArgs;
use crate::clock::Clock;
use crate::config::{self, parse_offset, ConfigError};
use crate::db::{self, ops};
use crate::domain::{Counter, Counters, Stage};
use crate::exit::ExitStatus;

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
fn stage_flags(stage: Stage, runs: &[&ops::StageRun], counters: &Counters, flags: &mut Vec<Flag>) {
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
pub async fn status(g: &GlobalArgs, clock: Clock, since: &str) -> anyhow::Result<ExitStatus> {
    let period = parse_offset("--since", since)?.abs();
    let now = clock.now();
    let db = db::connect(&config::database_url(g)?, 2).await?;
    let runs = ops::stage_runs(&db, now - period).await?;
    let last = ops::last_finished(&db).await?;
    let doubt = ops::in_doubt(&db).await?;
    let mut flags = Vec::new();
    let mut stages = Vec::new();
    for stage in Stage::ALL {
        let mine: Vec<&ops::StageRun> = runs.iter().filter(|r| r.stage == stage).collect();
        let mut counters = Counters::default();
        for r in &mine {
            counters.merge(&r.counters);
        }
        stage_flags(stage, &mine, &counters, &mut flags);
        let last_run = last.iter().find(|(s, _)| *s == stage).map(|(_, t)| *t);
        let overdue_after = stage.cadence() * 2;
        match last_run {
            None => flags.push(Flag {
                severity: Severity::Critical,
                stage: Some(stage.as_str()),
                message: "never completed a run: is the schedule installed?".into(),
            }),
            Some(t) if now - t > overdue_after => flags.push(Flag {
                severity: Severity::Critical,
                stage: Some(stage.as_str()),
                message: format!(
                    "no completed run for {} min (runs every {} min)",
                    (now - t).num_minutes(),
                    stage.cadence().num_minutes()
                ),
            }),
            Some(_) => {}
        }
        stages.push(StageStatus {
            stage: stage.as_str(),
            last_run,
            runs: mine.len(),
            counters,
        });
    }
    if !doubt.is_empty() {
        flags.push(Flag {
            severity: Severity::Critical,
            stage: None,
            message: format!(
                "{} delivery(ies) in doubt: check the provider's logs, then `journeyctl resolve ID --as sent|retry`",
                doubt.len()
            ),
        });
    }
    for (command, started) in ops::overdue_runs(&db).await? {
        flags.push(Flag {
            severity: Severity::Critical,
            stage: None,
            message: format!(
                "a {command} run started {} is still running past its deadline and holds its \
                 stage's lock: later runs of it are skipped; find the process (journey_runs) \
                 and stop it",
                started.format("%Y-%m-%d %H:%M UTC")
            ),
        });
    }
    for (stage, channel, n) in ops::expired(&db).await? {
        flags.push(Flag {
            severity: Severity::Critical,
            stage: Stage::parse(&stage).map(Stage::as_str),
            message: format!(
                "{n} {channel} delivery(ies) expired: left for retry until the window closed, \
                 never sent; see `journeyctl audit`"
            ),
        });
    }
    let mut misses = 0usize;
    for stage in Stage::ALL {
        misses += ops::audit(&db, stage, now - period, now)
            .await?
            .iter()
            .filter(|m| m.unexplained())
            .count();
    }
    if misses > 0 {
        flags.push(Flag {
            severity: Severity::Warning,
            stage: None,
            message: format!("{misses} booking(s) missed a message for no recorded reason: see `journeyctl audit`"),
        });
    }
    let reconcile = db::reconcile::health(&db, now - period).await?;
    reconcile_flags(&reconcile, now, &mut flags);
    let sms_fates = ops::sms_fates(&db, now - period, now).await?;
    let status = match flags.iter().map(|f| f.severity).max() {
        None => ExitStatus::Ok,
        Some(Severity::Warning) => ExitStatus::Failed,
        Some(Severity::Critical) => ExitStatus::Config,
    };
    let word = ["OK", "WARNING", "CRITICAL"][status.code() as usize];
    if g.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "status": word,
                "now": now,
                "since": now - period,
                "stages": stages,
                "flags": flags,
                "in_doubt": doubt,
                "reconcile": reconcile,
                "sms_delivery": sms_fates,
            }))?
        );
    } else {
        crate::outln!(
            "JOURNEY {word} - {} flag(s) since {}",
            flags.len(),
            (now - period).format("%Y-%m-%d %H:%M UTC")
        );
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
        for s in &stages {
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
        crate::outln!("  {}", reconcile_line(&reconcile));
        for f in &flags {
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
        print_sms_fates(&sms_fates);
        for d in &doubt {
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
    Ok(status)
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

/// `journeyctl audit [--days N]`
pub async fn audit(g: &GlobalArgs, clock: Clock, days: u32) -> anyhow::Result<ExitStatus> {
    if days == 0 || i64::from(days) > config::MAX_OFFSET_DAYS {
        return Err(ConfigError::new(format!(
            "--days {days} is out of range: give 1 to {}",
            config::MAX_OFFSET_DAYS
        ))
        .into());
    }
    let now = clock.now();
    let from = now - Duration::days(i64::from(days));
    let db = db::connect(&config::database_url(g)?, 2).await?;
    let mut all = Vec::new();
    for stage in Stage::ALL {
        all.extend(ops::audit(&db, stage, from, now).await?);
    }
    let unexplained = all.iter().filter(|m| m.unexplained()).count();
    let reconciled = db::reconcile::changes(&db, from, now).await?;
    let undelivered = ops::undelivered_sms(&db, from, now).await?;
    if g.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"from": from, "now": now, "misses": all,
                                                 "unexplained": unexplained,
                                                 "reconciled": reconciled,
                                                 "undelivered_sms": undelivered}))?
        );
    } else if all.is_empty() {
        crate::outln!(
            "audit: every closed window since {} got its message",
            from.format("%Y-%m-%d %H:%M UTC")
        );
    } else {
        crate::outln!(
            "audit: {} booking(s) without their message since {} ({} for no recorded reason)",
            all.len(),
            from.format("%Y-%m-%d %H:%M UTC"),
            unexplained
        );
        for m in &all {
            crate::outln!(
                "  {:<22} {:<10} {:<5} booking {} ({}){}",
                m.stage,
                m.outcome,
                m.channel.as_deref().unwrap_or("-"),
                m.booking_id,
                m.cal_uid,
                m.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
        }
    }
    if !g.json && !reconciled.is_empty() {
        crate::outln!(
            "audit: {} change(s) came in through reconcile (webhook lost):",
            reconciled.len()
        );
        for r in &reconciled {
            crate::outln!(
                "  reconcile  {:<20} {:<7} booking {} ({}) found {}{}",
                r.trigger,
                r.change,
                r.booking_id
                    .map(|id| id.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.cal_uid,
                r.found_at.format("%Y-%m-%d %H:%M UTC"),
                r.changed_at
                    .map(|t| format!(", changed at Cal.com {}", t.format("%Y-%m-%d %H:%M UTC")))
                    .unwrap_or_default()
            );
        }
    }
    if !g.json {
        print_undelivered(&undelivered);
    }
    Ok(if unexplained > 0 {
        ExitStatus::Failed
    } else {
        ExitStatus::Ok
    })
}

/// `journeyctl resolve ID --as sent|retry`
pub async fn resolve(
    g: &GlobalArgs,
    clock: Clock,
    id: Uuid,
    sent: bool,
) -> anyhow::Result<ExitStatus> {
    let db = db::connect(&config::database_url(g)?, 1).await?;
    match ops::resolve(&db, id, sent, clock.now()).await? {
        None => {
            eprintln!("resolve: no delivery {id}; `journeyctl status` lists the ones in doubt");
            Ok(ExitStatus::Failed)
        }
        Some(d) if d.status != "in_doubt" => {
            eprintln!(
                "resolve: delivery {id} is '{}', not in_doubt; nothing changed",
                d.status
            );
            Ok(ExitStatus::Failed)
        }
        Some(d) => {
            crate::outln!(
                "delivery {id} ({} {} {} of booking {}) is now {}",
                d.stage,
                d.recipient_role,
                d.channel,
                d.booking_id,
                if sent {
                    "sent"
                } else {
                    "retry: the next run inside the window sends it"
                }
            );
            Ok(ExitStatus::Ok)
        }
    }
}

/// `status`: per stage, what became of the SMS Twilio accepted in the period (from its
/// status callbacks; without `PUBLIC_CALLBACK_BASE` every SMS stays unconfirmed).
fn print_sms_fates(fates: &[ops::SmsFate]) {
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

/// `audit`: SMS Twilio accepted but could not deliver, with Twilio's error code.
fn print_undelivered(list: &[ops::UndeliveredSms]) {
    if list.is_empty() {
        return;
    }
    crate::outln!("audit: {} SMS not delivered:", list.len());
    for u in list {
        crate::outln!(
            "  {:<22} {:<11} error {:<6} booking {} delivery {} ({})",
            u.stage,
            u.provider_status,
            u.error_code.as_deref().unwrap_or("-"),
            u.booking_id,
            u.delivery_id,
            u.recipient.as_deref().unwrap_or("-")
        );
    }
}
