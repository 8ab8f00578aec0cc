//! What a stage run reports: its counters and failures ([`StageReport`]), the messages a dry
//! run lists ([`PlannedMessage`]), and the `error` events of a run ([`record_error`]). The
//! totals of the report set the exit status (`commands::stage`).

use serde::Serialize;
use uuid::Uuid;

use super::deliver::Delivery;
use super::journey::Journey;
use crate::db::ledger::EventRow;
use crate::db::runs;
use crate::domain::{Channel, Counter, Counters, EventKind, EventLevel, Stage};

/// A message a dry run would send (see docs/ARCHITECTURE.md), recipient masked.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedMessage {
    pub booking_id: Uuid,
    pub cal_uid: String,
    pub stage: &'static str,
    pub channel: &'static str,
    pub recipient_role: &'static str,
    pub recipient: String,
    pub subject: Option<String>,
}

impl PlannedMessage {
    /// The dry run's listing of a delivery.
    pub(crate) fn of(stage: Stage, d: &Delivery, subject: Option<String>) -> PlannedMessage {
        PlannedMessage {
            booking_id: d.booking_id,
            cal_uid: d.cal_uid.clone(),
            stage: stage.as_str(),
            channel: d.key.channel.as_str(),
            recipient_role: d.message.role.as_str(),
            recipient: d.message.to.masked(),
            subject,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    pub stage: &'static str,
    pub counters: Counters,
    pub planned: Vec<PlannedMessage>,
    /// Deliveries that failed this run (transient, permanent, ambiguous) and errors: any
    /// makes the exit status 1.
    #[serde(skip)]
    pub failures: u64,
    /// Another run held this stage's lock; nothing was done.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped_locked: bool,
}

impl StageReport {
    pub fn new(stage: &'static str) -> StageReport {
        StageReport {
            stage,
            counters: Counters::default(),
            planned: Vec::new(),
            failures: 0,
            skipped_locked: false,
        }
    }

    pub(crate) fn error(&mut self) {
        self.counters.bump(Counter::Errors);
        self.failures += 1;
    }

    pub fn failed(&self) -> bool {
        self.failures > 0 || self.counters.get(Counter::Errors) > 0
    }

    /// Adds what a group of deliveries counted, failed and listed.
    pub(crate) fn absorb(&mut self, counters: &Counters, failures: u64) {
        self.counters.merge(counters);
        self.failures += failures;
    }

    /// The dry-run listing in a stable order: by booking, channel, role.
    pub(crate) fn sort_planned(&mut self) {
        self.planned.sort_by(|a, b| {
            (a.booking_id, a.channel, a.recipient_role).cmp(&(
                b.booking_id,
                b.channel,
                b.recipient_role,
            ))
        });
    }
}

/// An `error` event row with these properties.
pub(crate) fn error_row(properties: serde_json::Value) -> EventRow {
    EventRow {
        kind: EventKind::Error,
        level: EventLevel::Error,
        properties,
    }
}

/// Where an error of a stage run happened: the stage, and the booking and channel when it
/// concerns one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ErrorAt {
    pub stage: Stage,
    pub booking_id: Option<Uuid>,
    pub channel: Option<Channel>,
}

impl ErrorAt {
    /// An error of the stage as a whole.
    pub(crate) fn stage(stage: Stage) -> ErrorAt {
        ErrorAt {
            stage,
            booking_id: None,
            channel: None,
        }
    }

    /// An error on one booking (and, with `channel`, one of its messages).
    pub(crate) fn booking(stage: Stage, booking_id: Uuid, channel: Option<Channel>) -> ErrorAt {
        ErrorAt {
            stage,
            booking_id: Some(booking_id),
            channel,
        }
    }
}

/// Logs an error of a stage run (with the booking's id when there is one) and writes its
/// `error` event; the caller counts it. Writing the event is best effort: the error is
/// already counted and logged, and a dry run writes nothing.
pub(crate) async fn record_error(j: &Journey, dry_run: bool, at: ErrorAt, reason: &str) {
    let ErrorAt {
        stage,
        booking_id,
        channel,
    } = at;
    match booking_id {
        Some(id) => log::error!("{stage}: booking {id}: {reason}"),
        None => log::error!("{stage}: {reason}"),
    }
    if dry_run {
        return;
    }
    let stage = stage.ledger_stage();
    let props = serde_json::json!({
        "source": format!("stage:{stage}"),
        "reason": reason,
        "booking_id": booking_id,
        "stage": stage,
        "channel": channel.map(Channel::as_str),
        "run_id": j.run_id,
    });
    if let Err(e) = runs::error_event(&j.db, &props).await {
        log::error!("failed to write an error event: {e:#}");
    }
}

/// Counts an error in `report` and records it ([`record_error`]).
pub(crate) async fn count_error(
    j: &Journey,
    report: &mut StageReport,
    dry_run: bool,
    at: ErrorAt,
    reason: &str,
) {
    report.error();
    record_error(j, dry_run, at, reason).await;
}
