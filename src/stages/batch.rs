//! Delivering a page's messages, up to `concurrency` at once. Claims go to the ledger in
//! batches (one statement per batch, committed before any message of the batch is sent; the
//! next batch is claimed while this one sends), outcomes are recorded in batches too. Once the
//! run is asked to stop (deadline, signal), messages not yet started are not sent: their
//! claims are given back (no row: they stay due for the next run, counted `retry_scheduled`),
//! and those in flight get the run's drain bound to finish; the ones still unanswered then are
//! declared `in_doubt` by this run, not left `sending`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::FutureExt;
use futures::StreamExt;
use uuid::Uuid;

use super::batch_claim::claim_batch;
use super::deliver::{deliver_guarded, Delivery, DeliveryResult, Mode, Tally};
use super::journey::{Journey, Pass};
use super::report::{count_error, record_error, ErrorAt, StageReport};
use super::stamper::Stamper;
use crate::db::ledger;
use crate::domain::{Counter, Stage};

/// Messages claimed together (one statement) and recorded together (one statement): large
/// enough to spare round trips, small enough that a failed statement concerns few messages.
pub(crate) const CLAIM_BATCH: usize = 64;

pub(crate) type Client = deadpool_postgres::ClientWrapper;
/// The sends of a batch claim: the claimed ids not handed to a provider yet (given back at
/// the end), and the task that stamps each right before its send.
pub(crate) struct Unsent {
    ids: Mutex<HashSet<Uuid>>,
    pub(crate) stamper: Stamper,
}

impl Unsent {
    fn new(j: &Journey, stage: Stage) -> Unsent {
        Unsent {
            ids: Mutex::default(),
            stamper: Stamper::start(j.db.clone(), j.run_id, requires_active(stage.ledger())),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, HashSet<Uuid>>> {
        self.ids.lock()
    }
}

/// Delivers `deliveries` as the module doc says; returns what each of them did.
pub(crate) async fn deliver_all(
    j: &Journey,
    pass: Pass,
    deliveries: Vec<Delivery>,
    report: &mut StageReport,
) -> Vec<Tally> {
    let total = deliveries.len();
    let stage = pass.stage;
    // Patient-exclusive claims (cancellation recovery) take a lock per patient: one message
    // at a time.
    let batched = !pass.dry_run && stage != Stage::CancellationRecovery && total > 0;
    let client = match batched {
        true => match j.db.client().await {
            Ok(c) => Some(c),
            Err(e) => {
                let why = format!("{e:#}");
                count_error(j, report, false, ErrorAt::stage(stage), &why).await;
                return Vec::new();
            }
        },
        false => None,
    };
    // Outcomes are recorded on a connection of their own, so a record in flight never holds
    // up the claim of the next batch; when the pool has none free, on the claims' one.
    // A page of one batch claims once: nothing for a record to hold up.
    let recorder = match &client {
        Some(_) if total > CLAIM_BATCH => j.db.spare_client().await,
        _ => None,
    };
    let unsent = Arc::new(Unsent::new(j, stage));
    let at_once = pass.concurrency.max(1);
    // Each send task holds a sender: once every one is dropped, no send of this page runs.
    let (alive, mut ended) = tokio::sync::mpsc::channel::<()>(1);
    let stream = match &client {
        Some(client) => batched_stream(j, stage, client, deliveries, &unsent, at_once, alive),
        None => {
            // Sent inside this task: nothing to wait for after the stream.
            drop(alive);
            let mode = move || match pass.dry_run {
                true => Mode::DryRun,
                false => Mode::Single,
            };
            futures::stream::iter(deliveries)
                .map(move |d| deliver_guarded(j, stage, d, mode()))
                .buffer_unordered(at_once)
                .boxed()
        }
    };
    let records = recorder.as_deref().or(client.as_deref());
    let (results, cut_short) = drive(j, stage, records, stream).await;
    // A run cut short aborted its sends still in flight: they have ended before their claims
    // are given back or declared in doubt.
    while ended.recv().await.is_some() {}
    if let Some(c) = &client {
        give_back(j, stage, c, &unsent, report).await;
    }
    if cut_short && !pass.dry_run {
        count_cut_short(j, stage, total - results.len(), report).await;
    }
    results
}

/// Whether a ledger stage's messages go out only while their booking is active: a
/// confirmation (checked when claimed, and again by the send-started stamp right before it
/// is sent).
pub(crate) fn requires_active(stage: crate::domain::LedgerStage) -> bool {
    stage == Stage::ConfirmationRecovery.ledger()
}

/// The batched deliveries: claimed `CLAIM_BATCH` at a time on `client` (the next batch while
/// this one is sent), then delivered, `at_once` at a time, each send a task of its own: the
/// sends use every core, and one waking up (its stamp committed, the relay's answer) waits
/// for no other. A send's task ends with it, or is aborted when the stream is dropped (a run
/// cut short); `alive` goes with each task, so the caller can wait until none runs.
fn batched_stream<'a>(
    j: &'a Journey,
    stage: Stage,
    client: &'a Client,
    deliveries: Vec<Delivery>,
    unsent: &'a Arc<Unsent>,
    at_once: usize,
    alive: tokio::sync::mpsc::Sender<()>,
) -> BoxStream<'a, DeliveryResult> {
    // Shared by the send tasks: one copy of the run context per page, not per send.
    let shared = Arc::new(j.clone());
    let mut batches = Vec::new();
    let mut deliveries = deliveries.into_iter().peekable();
    while deliveries.peek().is_some() {
        batches.push(deliveries.by_ref().take(CLAIM_BATCH).collect::<Vec<_>>());
    }
    futures::stream::iter(batches)
        .map(move |batch| claim_batch(j, client, batch, unsent))
        // The next batch is claimed while this one is sent: a send never waits for a claim.
        .buffered(2)
        .flat_map(futures::stream::iter)
        .map(move |(d, claim)| {
            let (j, unsent, alive) = (shared.clone(), unsent.clone(), alive.clone());
            let (booking_id, channel) = (d.booking_id, d.key.channel);
            let task = tokio::spawn(async move {
                let _alive = alive;
                let mode = match claim {
                    Some(claim) => Mode::Batched {
                        claim,
                        unsent: &unsent,
                    },
                    None => Mode::Single,
                };
                deliver_guarded(&j, stage, d, mode).await
            });
            let mut task = AbortOnDrop(task);
            async move {
                match (&mut task.0).await {
                    Ok(r) => r,
                    // Never aborted while awaited, and a panic is caught inside: a defect.
                    Err(e) => {
                        log::error!("{stage}: booking {booking_id}: the send's task failed: {e}");
                        DeliveryResult {
                            tally: Tally::default().fail(Counter::Errors),
                            outcome: None,
                            booking_id,
                            channel,
                        }
                    }
                }
            }
        })
        .buffer_unordered(at_once)
        .boxed()
}

/// Runs the deliveries until all are done or the run's drain bound passes (`true`: cut
/// short). Outcomes of batched deliveries are recorded `CLAIM_BATCH` or more at a time on
/// `client`, one record in flight at once, while the next messages keep being sent.
async fn drive(
    j: &Journey,
    stage: Stage,
    client: Option<&Client>,
    mut stream: BoxStream<'_, DeliveryResult>,
) -> (Vec<Tally>, bool) {
    let mut results = Vec::new();
    let mut pending: Vec<DeliveryResult> = Vec::new();
    let mut recording: Option<BoxFuture<'_, Vec<Tally>>> = None;
    let mut cut_short = false;
    let drain = j.control.drain_expired();
    tokio::pin!(drain);
    loop {
        if let (None, Some(c)) = (&recording, client) {
            if pending.len() >= CLAIM_BATCH {
                let batch = std::mem::take(&mut pending);
                recording = Some(record_outcomes(j, stage, c, batch).boxed());
            }
        }
        tokio::select! {
            biased;
            tallies = async {
                match recording.as_mut() {
                    Some(r) => r.await,
                    None => std::future::pending().await,
                }
            }, if recording.is_some() => {
                results.extend(tallies);
                recording = None;
            }
            next = stream.next() => match next {
                Some(d) if d.outcome.is_some() => pending.push(d),
                Some(d) => results.push(d.tally),
                None => break,
            },
            () = &mut drain => {
                cut_short = true;
                break;
            }
        }
    }
    drop(stream);
    if let Some(r) = recording {
        results.extend(r.await);
    }
    if let Some(c) = client {
        results.extend(record_outcomes(j, stage, c, pending).await);
    }
    (results, cut_short)
}

/// Claimed in a batch but never handed to a provider: given back (no row left).
async fn give_back(
    j: &Journey,
    stage: Stage,
    client: &Client,
    unsent: &Unsent,
    report: &mut StageReport,
) {
    let ids: Vec<Uuid> = unsent
        .lock()
        .map(|u| u.iter().copied().collect())
        .unwrap_or_default();
    if let Err(e) = ledger::release_unsent(client, j.run_id, &ids).await {
        count_error(j, report, false, ErrorAt::stage(stage), &format!("{e:#}")).await;
    }
}

/// A run cut short by its drain bound: the sends still unanswered are declared `in_doubt`
/// by this run; the `unfinished` deliveries never started are left for the next run.
async fn count_cut_short(j: &Journey, stage: Stage, unfinished: usize, report: &mut StageReport) {
    let abandoned = match ledger::abandon_in_flight(&j.db, j.run_id, stage.ledger_stage()).await {
        Ok(n) => n,
        Err(e) => {
            count_error(j, report, false, ErrorAt::stage(stage), &format!("{e:#}")).await;
            0
        }
    };
    if abandoned > 0 {
        log::error!(
            "{stage}: {abandoned} send(s) got no answer within the drain bound of {} s: in doubt; see `journeyctl status`",
            j.control.drain().as_secs()
        );
        report.counters.add(Counter::InDoubt, abandoned);
        report.failures += abandoned;
    }
    report.counters.add(
        Counter::RetryScheduled,
        (unfinished as u64).saturating_sub(abandoned),
    );
}

/// Records the outcomes of `batch` in one statement and answers their tallies. When the
/// statement fails, each of them is an error: its row stays `sending` and becomes `in_doubt`,
/// never resent blindly.
async fn record_outcomes(
    j: &Journey,
    stage: Stage,
    client: &Client,
    mut batch: Vec<DeliveryResult>,
) -> Vec<Tally> {
    if batch.is_empty() {
        return Vec::new();
    }
    let outcomes: Vec<ledger::OwnedOutcome> =
        batch.iter_mut().filter_map(|d| d.outcome.take()).collect();
    match ledger::record_batch(client, &outcomes, j.clock.now()).await {
        Ok(()) => batch.into_iter().map(|d| d.tally).collect(),
        Err(e) => {
            let mut results = Vec::with_capacity(batch.len());
            for (d, o) in batch.into_iter().zip(&outcomes) {
                let why = format!(
                    "{e:#}; delivery {} will be declared in doubt",
                    o.delivery_id
                );
                let at = ErrorAt::booking(stage, d.booking_id, Some(d.channel));
                record_error(j, false, at, &why).await;
                results.push(Tally::default().fail(Counter::Errors));
            }
            results
        }
    }
}

/// A spawned delivery, aborted when its caller stops waiting for it.
struct AbortOnDrop(tokio::task::JoinHandle<DeliveryResult>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
