//! One delivery, end to end: render, claim, send through `notify::Senders`, record. Each step
//! is its own function; what the provider's answer means is `outcome::judge`. A delivery is
//! driven alone (its own claim and record) or as part of a batch (`stages::batch` claims
//! ahead and records the outcomes together); a panic inside one never takes down the batch.

use futures::FutureExt;
use uuid::Uuid;

use super::batch::Unsent;
use super::journey::Journey;
use super::outcome::judge;
use super::plan::Message;
use super::render::{self, Content};
use super::report::{error_row, PlannedMessage};
use super::row::{claim, held_back, owned_outcome, record, render_failed, Claimed};
use super::stamper::PendingStamp;
use crate::db::bookings::DueBooking;
use crate::db::ledger::{self, Claim, DeliveryKey, OwnedOutcome};
use crate::domain::{Channel, Counter, Counters, Stage};
use crate::notify::SendOutcome;

/// A message bound to its ledger key: ready to claim, send and record.
pub(crate) struct Delivery {
    pub booking_id: Uuid,
    pub cal_uid: String,
    pub patient_id: Option<Uuid>,
    pub key: DeliveryKey,
    pub message: Message,
    pub mark_column: Option<&'static str>,
    pub invite: Option<String>,
}

impl Delivery {
    /// `message` of booking `b` under ledger `key`; a sent one sets `mark_column`.
    pub(crate) fn new(
        j: &Journey,
        b: &DueBooking,
        key: DeliveryKey,
        message: Message,
        mark_column: Option<&'static str>,
    ) -> Delivery {
        Delivery {
            booking_id: b.id,
            cal_uid: b.cal_uid.clone(),
            patient_id: b.patient_id,
            key,
            invite: message.invite.then(|| render::invite_for(j, b, &message)),
            mark_column,
            message,
        }
    }
}

/// What one delivery did to the run's report.
#[derive(Default)]
pub(crate) struct Tally {
    pub counters: Counters,
    pub failures: u64,
    pub planned: Option<PlannedMessage>,
    /// Another run had this message already: counted once per booking by the caller.
    pub taken: Option<Uuid>,
}

impl Tally {
    pub(crate) fn count(mut self, c: Counter) -> Tally {
        self.counters.bump(c);
        self
    }
    pub(crate) fn fail(mut self, c: Counter) -> Tally {
        self.counters.bump(c);
        self.failures += 1;
        self
    }
}

/// What [`deliver`] did with one message. With `outcome`, the outcome still has to be
/// recorded (a batch records it): `tally` holds once it is.
pub(crate) struct DeliveryResult {
    pub tally: Tally,
    pub outcome: Option<OwnedOutcome>,
    pub booking_id: Uuid,
    pub channel: Channel,
}

impl From<(Tally, &Delivery)> for DeliveryResult {
    fn from((tally, d): (Tally, &Delivery)) -> DeliveryResult {
        DeliveryResult {
            tally,
            outcome: None,
            booking_id: d.booking_id,
            channel: d.key.channel,
        }
    }
}

/// How a delivery is driven.
pub(crate) enum Mode<'a> {
    /// Rendered and listed, nothing claimed or sent.
    DryRun,
    /// Claimed, sent and recorded on its own.
    Single,
    /// Claimed ahead in a batch (`claim` is its answer); the outcome goes back to the batch.
    /// `unsent` holds the batch's claimed ids not handed to a provider yet.
    Batched {
        claim: anyhow::Result<Claim>,
        unsent: &'a Unsent,
    },
}

impl Mode<'_> {
    pub(crate) fn dry_run(&self) -> bool {
        matches!(self, Mode::DryRun)
    }
}

/// [`deliver`], with a panic inside it caught: one delivery that panics (a value a library
/// cannot encode, a bug) never takes down the batch. It is counted as an error, its claimed row
/// becomes `failed` with the reason, and the `error` event is written. The panic's own message
/// is not recorded: it may quote the data that caused it.
pub(crate) async fn deliver_guarded(
    j: &Journey,
    stage: Stage,
    d: Delivery,
    mode: Mode<'_>,
) -> DeliveryResult {
    let key = d.key.clone();
    let role = d.message.role;
    let dry_run = mode.dry_run();
    let result = std::panic::AssertUnwindSafe(deliver(j, stage, d, mode))
        .catch_unwind()
        .await;
    if let Ok(result) = result {
        return result;
    }
    let reason = format!(
        "sending the {} {role} {} panicked (a defect on this booking's data); not retried",
        key.stage, key.channel
    );
    log::error!("{stage}: booking {}: {reason}", key.booking_id);
    if !dry_run {
        let event = error_row(serde_json::json!({
            "source": format!("stage:{}", key.stage),
            "reason": reason,
            "booking_id": key.booking_id,
            "stage": key.stage,
            "channel": key.channel.as_str(),
            "recipient_role": role.as_str(),
            "run_id": j.run_id,
            "outcome": "panicked",
        }));
        if let Err(e) = ledger::record_panicked(&j.db, &key, j.run_id, &reason, &event).await {
            log::error!("{stage}: booking {}: {e:#}", key.booking_id);
        }
    }
    DeliveryResult {
        tally: Tally::default().fail(Counter::Errors),
        outcome: None,
        booking_id: key.booking_id,
        channel: key.channel,
    }
}

/// Renders, claims, sends and records one message.
async fn deliver(j: &Journey, stage: Stage, d: Delivery, mode: Mode<'_>) -> DeliveryResult {
    let channel = d.key.channel;
    let content = match render::render(j, &d.message) {
        Ok(c) => c,
        Err(e) => return render_failed(j, stage, &d, mode, &format!("{e:#}")).await,
    };
    if mode.dry_run() {
        // A dry run sends nothing, so it counts nothing as sent: `planned` lists it.
        let tally = Tally {
            planned: Some(PlannedMessage::of(stage, &d, content.subject)),
            ..Tally::default()
        };
        return (tally, &d).into();
    }
    if j.control.stopped().is_some() || j.control.channel_stopped(channel) {
        // Not claimed: no row, so the next run (or this one's retry row) takes it again. (A
        // batch's claim stays in `unsent` and is given back.)
        log::debug!(
            "{stage}: booking {} {} {channel}: not claimed, the run is stopping or the channel is stopped",
            d.booking_id,
            d.message.role
        );
        return (Tally::default().count(Counter::RetryScheduled), &d).into();
    }
    let (claimed, stamp) = match claim(j, stage, &d, mode).await {
        Ok(c) => c,
        Err(early) => return early,
    };
    // Handed to the provider from here on: no longer the batch's to give back (unless its
    // stamp says no, see `held_back`).
    if let Some((batch, _)) = &stamp {
        if let Ok(mut u) = batch.lock() {
            u.remove(&claimed.id);
        }
    }
    send_and_record(j, stage, d, content, claimed, stamp).await
}

/// Sends a claimed delivery through its channel's sender and records what came of it (or,
/// batched, hands the outcome back for the batch to record). A batch's delivery is handed to
/// the provider only once its `stamp` is committed.
async fn send_and_record(
    j: &Journey,
    stage: Stage,
    d: Delivery,
    content: Content,
    claimed: Claimed,
    stamp: Option<(&Unsent, PendingStamp)>,
) -> DeliveryResult {
    let channel = d.key.channel;
    let Claimed {
        id,
        message_id,
        attempt,
    } = claimed;
    let batched = stamp.is_some();
    let rendered = render::for_provider(j, &d, content, message_id, id);
    let gate = match &stamp {
        Some((_, pending)) => pending.gate(),
        None => crate::notify::open_gate(),
    };
    let outcome = match (j.senders.send(&d.message.to, rendered, gate).await, stamp) {
        (Some(outcome), _) => outcome,
        (None, Some((batch, pending))) => return held_back(j, stage, &d, id, batch, pending).await,
        // An open gate holds nothing back; were it to, nothing went out: try again later.
        (None, None) => SendOutcome::Transient {
            reason: "not handed to the provider: held back".into(),
        },
    };
    if let SendOutcome::Misconfigured { setting, .. } = &outcome {
        // Every further message of the channel would meet the same refusal.
        j.control.stop_channel(channel, setting);
    }
    let verdict = judge(
        &outcome,
        channel,
        d.message.kind,
        &event_props(j, &d, id, attempt),
    );
    if let Some(e) = &verdict.error {
        let status = verdict.status;
        log::warn!(
            "{stage}: booking {} {} {channel}: {status}: {e}",
            d.booking_id,
            d.message.role
        );
    }
    // A number Twilio refused for good (STOP, invalid, not a mobile) is suppressed now.
    let suppressed =
        super::optout::after_send(j, stage, d.booking_id, &d.message.to, &outcome).await;
    let tally = match suppressed {
        true => Tally::default(),
        false => Tally::default().fail(Counter::Errors),
    };
    let tally = match verdict.failed {
        true => tally.fail(verdict.counter),
        false => tally.count(verdict.counter),
    };
    let outcome = owned_outcome(id, &d, verdict);
    if batched {
        return DeliveryResult {
            outcome: Some(outcome),
            ..(tally, &d).into()
        };
    }
    record(j, stage, &d, outcome, tally).await
}

/// The event properties every outcome of this delivery carries.
fn event_props(j: &Journey, d: &Delivery, delivery_id: Uuid, attempt: i32) -> serde_json::Value {
    serde_json::json!({
        "booking_id": d.booking_id,
        "stage": d.key.stage,
        "channel": d.key.channel.as_str(),
        "recipient_role": d.message.role.as_str(),
        "delivery_id": delivery_id,
        "run_id": j.run_id,
        "attempt": attempt,
    })
}
