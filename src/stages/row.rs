//! A delivery's ledger row: claimed (alone, or taken from a batch's claim and stamped as
//! being sent), and its outcome recorded on its own. The batch's statements are in
//! `stages::batch` and `stages::batch_claim`; the SQL itself is `db::ledger`.

use uuid::Uuid;

use super::batch::Unsent;
use super::deliver::{Delivery, DeliveryResult, Mode, Tally};
use super::journey::Journey;
use super::outcome::Verdict;
use super::report::{record_error, ErrorAt};
use super::stamper::PendingStamp;
use crate::db::ledger::{self, Claim, ClaimRequest, OwnedOutcome, Stamp};
use crate::domain::{Counter, DeliveryStatus, Stage};

/// A claimed delivery: its row, the Message-ID it goes out with, and which attempt this is.
pub(crate) struct Claimed {
    pub id: Uuid,
    pub message_id: String,
    pub attempt: i32,
}

/// A message that could not be rendered: an error. Claimed in a batch, it is recorded as
/// `retry` with the batch; alone, it is claimed plainly and recorded as `retry`, so `audit`
/// sees the channel that failed and a later run (fixed template) sends it on its own.
pub(crate) async fn render_failed(
    j: &Journey,
    stage: Stage,
    d: &Delivery,
    mode: Mode<'_>,
    why: &str,
) -> DeliveryResult {
    let at = ErrorAt::booking(stage, d.booking_id, Some(d.key.channel));
    record_error(j, mode.dry_run(), at, why).await;
    let failed = Tally::default().fail(Counter::Errors);
    match mode {
        Mode::Batched {
            claim: Ok(Claim::Claimed { id, .. }),
            unsent,
        } => {
            if let Ok(mut u) = unsent.lock() {
                u.remove(&id);
            }
            let outcome = OwnedOutcome {
                delivery_id: id,
                status: DeliveryStatus::Retry,
                provider_message_id: None,
                error: Some(format!("the message could not be rendered: {why}")),
                mark_column: None,
                event: None,
            };
            DeliveryResult {
                outcome: Some(outcome),
                ..(failed, d).into()
            }
        }
        Mode::Single => {
            if let Err(e) = record_render_error(j, d, why).await {
                record_error(j, false, at, &format!("{e:#}")).await;
            }
            (failed, d).into()
        }
        Mode::DryRun | Mode::Batched { .. } => (failed, d).into(),
    }
}

/// Claims the delivery (or takes the batch's claim and asks for its send-started stamp).
/// `Err` is the delivery's result when it goes no further; `Ok` carries, when batched, the
/// batch's `unsent` and the pending stamp the send must wait for before handing it over.
pub(crate) async fn claim<'a>(
    j: &Journey,
    stage: Stage,
    d: &Delivery,
    mode: Mode<'a>,
) -> Result<(Claimed, Option<(&'a Unsent, PendingStamp)>), DeliveryResult> {
    let (claim, unsent) = match mode {
        Mode::Batched { claim, unsent } => (claim, Some(unsent)),
        Mode::Single | Mode::DryRun => (claim_delivery(j, d, Some(stage)).await, None),
    };
    let tally = Tally::default();
    let at = ErrorAt::booking(stage, d.booking_id, Some(d.key.channel));
    let claimed = match claim {
        Ok(Claim::Claimed {
            id,
            message_id,
            attempt,
        }) => Claimed {
            id,
            message_id,
            attempt,
        },
        Ok(Claim::Taken(DeliveryStatus::InDoubt)) => {
            return Err((tally.count(Counter::InDoubt), d).into())
        }
        Ok(Claim::PatientTaken) => {
            return Err((tally.count(Counter::SkippedRecentlyRecovered), d).into())
        }
        // Cancelled (or otherwise no longer active) since the run selected it.
        Ok(Claim::Inactive) => return Err((tally.count(Counter::SkippedInactive), d).into()),
        Ok(Claim::Taken(_)) => {
            let tally = Tally {
                taken: Some(d.booking_id),
                ..tally
            };
            return Err((tally, d).into());
        }
        Err(e) => {
            record_error(j, false, at, &format!("{e:#}")).await;
            return Err((tally.fail(Counter::Errors), d).into());
        }
    };
    // A batch's claim is stamped right before its send: asked for now, committed while the
    // send gets ready (see `notify::Gate`).
    let stamp = unsent.map(|batch| (batch, batch.stamper.request(claimed.id)));
    Ok((claimed, stamp))
}

/// A delivery claimed ahead in a batch whose stamp said no while its send waited for it:
/// nothing was handed to the provider, and the claim is the batch's to give back again.
/// `Stamp::Inactive` (a confirmation whose booking is no longer active) is skipped; a stamp
/// that failed is an error.
pub(crate) async fn held_back(
    j: &Journey,
    stage: Stage,
    d: &Delivery,
    delivery_id: Uuid,
    batch: &Unsent,
    stamp: PendingStamp,
) -> DeliveryResult {
    if let Ok(mut u) = batch.lock() {
        u.insert(delivery_id);
    }
    let why = match stamp.answer().await {
        Ok(Stamp::Inactive) => return (Tally::default().count(Counter::SkippedInactive), d).into(),
        Ok(Stamp::Stamped) => format!(
            "delivery {delivery_id} was held back although stamped; given back for the next run"
        ),
        Err(why) => why,
    };
    let at = ErrorAt::booking(stage, d.booking_id, Some(d.key.channel));
    record_error(j, false, at, &why).await;
    (Tally::default().fail(Counter::Errors), d).into()
}

pub(crate) fn owned_outcome(delivery_id: Uuid, d: &Delivery, v: Verdict) -> OwnedOutcome {
    OwnedOutcome {
        delivery_id,
        status: v.status,
        provider_message_id: v.provider_id,
        error: v.error,
        mark_column: d.mark_column,
        event: Some(v.event),
    }
}

/// Records one outcome on its own. When that fails, the row stays in `sending` and becomes
/// `in_doubt`: never resent blindly.
pub(crate) async fn record(
    j: &Journey,
    stage: Stage,
    d: &Delivery,
    outcome: OwnedOutcome,
    tally: Tally,
) -> DeliveryResult {
    let delivery_id = outcome.delivery_id;
    let recorded = ledger::record(
        &j.db,
        delivery_id,
        &ledger::Outcome {
            status: outcome.status,
            provider_message_id: outcome.provider_message_id.as_deref(),
            error: outcome.error.as_deref(),
            mark_column: outcome.mark_column,
            now: j.clock.now(),
            event: outcome.event,
        },
    )
    .await;
    if let Err(e) = recorded {
        let why = format!("{e:#}; delivery {delivery_id} will be declared in doubt");
        let at = ErrorAt::booking(stage, d.booking_id, Some(d.key.channel));
        record_error(j, false, at, &why).await;
        return (Tally::default().fail(Counter::Errors), d).into();
    }
    (tally, d).into()
}

/// Claims one delivery's ledger row. With its `stage`, the stage's claim rules apply
/// (cancellation recovery is exclusive per patient; a confirmation needs the booking still
/// active); without, the row is claimed plainly (to record a render error).
async fn claim_delivery(j: &Journey, d: &Delivery, stage: Option<Stage>) -> anyhow::Result<Claim> {
    let masked = d.message.to.masked();
    ledger::claim(
        &j.db,
        &ClaimRequest {
            key: &d.key,
            patient_id: d.patient_id,
            run_id: j.run_id,
            claimed_by: &j.application_name,
            recipient_masked: &masked,
            message_id_domain: &j.message_id_domain,
            patient_exclusive_since: stage
                .and_then(Stage::patient_exclusive_period)
                .map(|p| j.clock.now() - p),
            require_active: stage.is_some() && super::batch::requires_active(d.key.stage),
        },
    )
    .await
}

/// A message that could not be rendered: claimed and recorded as `retry` with the error.
async fn record_render_error(j: &Journey, d: &Delivery, why: &str) -> anyhow::Result<()> {
    let Claim::Claimed { id, .. } = claim_delivery(j, d, None).await? else {
        // Another run has it: nothing of ours to record.
        return Ok(());
    };
    ledger::record(
        &j.db,
        id,
        &ledger::Outcome {
            status: DeliveryStatus::Retry,
            provider_message_id: None,
            error: Some(&format!("the message could not be rendered: {why}")),
            mark_column: None,
            now: j.clock.now(),
            event: None,
        },
    )
    .await
}
