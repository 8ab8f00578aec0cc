//! `journeyctl audit`: the bookings whose window closed without their message (per stage, the
//! windows and eligibility from its facts, queried in `db::reports::audit`), the changes that
//! came in through reconcile, and the SMS Twilio could not deliver.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::status::OPERATOR_CONNECTIONS;
use crate::cli::GlobalArgs;
use crate::clock::Clock;
use crate::config::{self, ConfigError};
use crate::db::{self, reports};
use crate::domain::Stage;
use crate::exit::ExitStatus;

/// `journeyctl audit [--days N]`
pub(crate) async fn audit(g: &GlobalArgs, clock: Clock, days: u32) -> anyhow::Result<ExitStatus> {
    if days == 0 || i64::from(days) > config::MAX_OFFSET_DAYS {
        return Err(ConfigError::new(format!(
            "--days {days} is out of range: give 1 to {}",
            config::MAX_OFFSET_DAYS
        ))
        .into());
    }
    let now = clock.now();
    let from = now - Duration::days(i64::from(days));
    let db = db::connect(&config::database_url(g)?, OPERATOR_CONNECTIONS).await?;
    let mut all = Vec::new();
    for stage in Stage::ALL {
        all.extend(reports::audit(&db, stage, from, now).await?);
    }
    let unexplained = all.iter().filter(|m| m.unexplained()).count();
    let reconciled = db::reconcile::changes(&db, from, now).await?;
    let undelivered = reports::undelivered_sms(&db, from, now).await?;
    if g.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"from": from, "now": now, "misses": all,
                                                 "unexplained": unexplained,
                                                 "reconciled": reconciled,
                                                 "undelivered_sms": undelivered}))?
        );
    } else {
        print_misses(&all, from, unexplained);
        print_reconciled(&reconciled);
        print_undelivered(&undelivered);
    }
    Ok(if unexplained > 0 {
        ExitStatus::Failed
    } else {
        ExitStatus::Ok
    })
}

/// `audit`: SMS Twilio accepted but could not deliver, with Twilio's error code.
fn print_undelivered(list: &[reports::UndeliveredSms]) {
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

/// `audit`'s misses, each with its outcome and why.
fn print_misses(all: &[reports::Miss], from: DateTime<Utc>, unexplained: usize) {
    if all.is_empty() {
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
        for m in all {
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
}

/// `audit`'s changes that came in through reconcile (their webhook was lost).
fn print_reconciled(reconciled: &[db::reconcile::Reconciled]) {
    if reconciled.is_empty() {
        return;
    }
    crate::outln!(
        "audit: {} change(s) came in through reconcile (webhook lost):",
        reconciled.len()
    );
    for r in reconciled {
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
