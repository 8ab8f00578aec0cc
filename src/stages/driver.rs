//! The shared stage driver's entry points: [`run_stage`] (a stage over its window), and the
//! webhook's two paths for one booking, [`confirm_booking`] and [`notify_cancellation`].
//! The driver is split by responsibility (docs/ARCHITECTURE.md, "The path of a stage run"):
//! `journey` (run context and options), `select` (lock and page loop), `decide` (the pure
//! decision), `process` (gates and skips of a page), `batch` and `deliver` (claim, send,
//! record), `outcome` (a provider's answer), `render`, and `report`. One bad booking never
//! stops the batch: it is counted, logged with its id, written as an `error` event, and the
//! totals set the exit status.

use uuid::Uuid;

use super::cancellation_notice;
use super::confirmation_recovery::Origin;
use super::deliver::{deliver_guarded, Delivery, Mode};
use super::journey::{Pass, WEBHOOK_CONCURRENCY};
use super::plan::{MessagePlan, Plan, PlanInput};
use crate::db::bookings::{self, DueBooking, PatientRow};
use crate::db::ledger::DeliveryKey;
use crate::domain::{Counter, Stage};

pub use super::journey::{Journey, StageOptions};
pub use super::report::{PlannedMessage, StageReport};
pub use super::select::run_stage;

/// Sends the confirmation and therapist notice of one booking now (the webhook's path).
pub async fn confirm_booking(j: &Journey, booking_id: Uuid) -> anyhow::Result<StageReport> {
    let (report, missing) = confirm_bookings(j, &[booking_id], WEBHOOK_CONCURRENCY).await?;
    if !missing.is_empty() {
        anyhow::bail!("booking {booking_id} vanished before its confirmation");
    }
    Ok(report)
}

/// Sends the confirmations and therapist notices of the bookings `ids` now, as one page
/// (`serve`'s path for the bookings its webhooks committed): one query loads them, claims and
/// outcomes go to the ledger in batches across bookings, `concurrency` sends at once.
/// Answers the report and the ids no booking has (any more).
pub async fn confirm_bookings(
    j: &Journey,
    ids: &[Uuid],
    concurrency: usize,
) -> anyhow::Result<(StageReport, Vec<Uuid>)> {
    let mut report = StageReport::new(Stage::ConfirmationRecovery.ledger_stage());
    let due = bookings::select_many(&j.db, ids, j.clock.now()).await?;
    let found: std::collections::HashSet<Uuid> = due.iter().map(|b| b.id).collect();
    let missing = ids
        .iter()
        .copied()
        .filter(|id| !found.contains(id))
        .collect();
    let pass = Pass {
        stage: Stage::ConfirmationRecovery,
        origin: Origin::Webhook,
        dry_run: false,
        concurrency,
    };
    super::process::process(j, pass, due, &mut report).await;
    Ok((report, missing))
}

/// Sends the cancellation notice (with the invite's `METHOD:CANCEL`) of one booking whose
/// patient got an invite (the webhook's path, after a BOOKING_CANCELLED was committed). The
/// rule is `cancellation_notice::plan`; the delivery goes through the ledger under its own
/// stage, so a second call (a repeated webhook, a retry) never sends it twice.
pub async fn notify_cancellation(j: &Journey, booking_id: Uuid) -> anyhow::Result<StageReport> {
    let mut report = StageReport::new(cancellation_notice::LEDGER_STAGE.as_str());
    let now = j.clock.now();
    let Some(b) = bookings::select_one(&j.db, booking_id, now).await? else {
        anyhow::bail!("booking {booking_id} vanished before its cancellation notice");
    };
    report.counters.bump(Counter::Processed);
    let patient_ids: Vec<Uuid> = b.patient_id.into_iter().collect();
    let patients = bookings::load_patients(&j.db, &patient_ids).await?;
    let attendee = PatientRow::attendee_of(&b);
    let input = PlanInput {
        booking: &b,
        patient: b.patient_id.and_then(|id| patients.get(&id)),
        attendee: attendee.as_ref(),
        settings: &j.settings,
        now,
        sms_enabled: false,
    };
    let messages = match cancellation_notice::plan(&input) {
        Plan::Skip {
            counter, reason, ..
        } => {
            report.counters.bump(counter);
            log::info!("cancellation notice of booking {booking_id}: not sent: {reason}");
            return Ok(report);
        }
        Plan::Messages(messages) => messages,
    };
    for m in messages {
        match m {
            MessagePlan::Send(message) => send_notice(j, &b, *message, &mut report).await,
            MessagePlan::Skip {
                counter, reason, ..
            } => {
                report.counters.bump(counter);
                log::info!("cancellation notice of booking {booking_id}: not sent: {reason}");
            }
        }
    }
    Ok(report)
}

/// Delivers one cancellation notice, unless its recipient opted out.
async fn send_notice(
    j: &Journey,
    b: &DueBooking,
    message: super::plan::Message,
    report: &mut StageReport,
) {
    let key = DeliveryKey {
        booking_id: b.id,
        stage: cancellation_notice::LEDGER_STAGE,
        channel: message.to.channel(),
        role: message.role,
    };
    // Logs and error events name the booking's confirmation; the ledger row and
    // `email_sent` carry the notice's own stage.
    let stage = Stage::ConfirmationRecovery;
    let optout = super::optout::suppressed_one(j, stage, &key, b.patient_id, &message.to, report);
    if optout.await {
        return;
    }
    let d = Delivery::new(j, b, key, message, None);
    let t = deliver_guarded(j, stage, d, Mode::Single).await.tally;
    report.absorb(&t.counters, t.failures);
}
