//! The shared stage driver: select → decide → claim → render → send → record, the same for
//! every stage (SPEC §5). Sends overlap up to `concurrency`, so a slow SMTP server does not
//! serialise the run. One bad booking never stops the batch: it is counted, logged with its
//! id, written as an `error` event, and the totals set the exit status.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::Duration;
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use uuid::Uuid;

use super::confirmation::{self, Trigger};
use super::control::RunControl;
use super::plan::{MessagePlan, Outgoing, Plan, PlanInput, Recipient};
use super::{cancellation_notice, followups, reminders};
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::bookings::{self, DueBooking, PatientRow};
use crate::db::ledger::{self, Claim, ClaimRequest, DeliveryKey, EventRow, LedgerRow, Outcome};
use crate::db::{runs, Db};
use crate::domain::{
    display_name, mark_column, BookingKind, Channel, Counter, Counters, DeliveryStatus,
    EmailAddress, MessageKind, RecipientRole, Stage,
};
use crate::notify::email::{Attachment, Mailer, OutgoingEmail};
use crate::notify::sms::SmsSender;
use crate::notify::SendOutcome;
use crate::templates::Templates;

/// Advisory lock namespace of stage runs (first key of `pg_try_advisory_lock(int, int)`).
const STAGE_LOCK_NS: i32 = 0x4a43_0001;

/// What one run works with. Built once per process; stages share it.
#[derive(Clone)]
pub struct Journey {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub templates: Arc<Templates>,
    /// `None` only in dry runs without a configured transport.
    pub mailer: Option<Mailer>,
    /// `None`: SMS is off.
    pub sms: Option<SmsSender>,
    pub clock: Clock,
    pub run_id: Uuid,
    /// This process's connection name, recorded on claims (liveness of `sending` rows).
    pub application_name: String,
    /// Right-hand side of generated Message-IDs (the sender's domain).
    pub message_id_domain: String,
    /// The run's deadline, signals and stopped channels.
    pub control: RunControl,
}

#[derive(Clone, Debug)]
pub struct StageOptions {
    pub dry_run: bool,
    pub limit: Option<u32>,
    /// Offsets from now, `(earlier, later)`.
    pub window: (Duration, Duration),
    pub lock: bool,
    pub concurrency: usize,
}

/// A message a dry run would send (SPEC §2), recipient masked.
#[derive(Clone, Debug, Serialize)]
pub struct Planned {
    pub booking_id: Uuid,
    pub cal_uid: String,
    pub stage: &'static str,
    pub channel: &'static str,
    pub recipient_role: &'static str,
    pub recipient: String,
    pub subject: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    pub stage: &'static str,
    pub counters: Counters,
    pub planned: Vec<Planned>,
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

    fn error(&mut self) {
        self.counters.bump(Counter::Errors);
        self.failures += 1;
    }

    pub fn failed(&self) -> bool {
        self.failures > 0 || self.counters.get(Counter::Errors) > 0
    }
}

/// Runs one stage over its window, on one connection: it takes the stage lock (a session
/// lock, so the connection stays checked out for the stage) and does the stage's own queries,
/// so a run with nothing due opens no second connection.
pub async fn run_stage(
    j: &Journey,
    stage: Stage,
    opts: &StageOptions,
) -> anyhow::Result<StageReport> {
    let mut report = StageReport::new(stage.as_str());
    let live = j.db.client().await?;
    if !opts.lock {
        return run_locked(j, stage, opts, &live, &mut report)
            .await
            .map(|()| report);
    }
    // One round trip: the lock is a constant pair, no parameters to bind.
    let lock = format!(
        "SELECT pg_try_advisory_lock({STAGE_LOCK_NS}, {})",
        stage as i32
    );
    let got = live
        .simple_query(&lock)
        .await
        .map_err(|e| anyhow::anyhow!("Failed to try the {stage} lock: {e}"))?
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "t"),
            _ => None,
        })
        .unwrap_or(false);
    if !got {
        log::info!("{stage}: another run holds the stage lock; nothing to do");
        report.skipped_locked = true;
        return Ok(report);
    }
    let result = run_locked(j, stage, opts, &live, &mut report).await;
    let unlock = format!(
        "SELECT pg_advisory_unlock({STAGE_LOCK_NS}, {})",
        stage as i32
    );
    if let Err(e) = live.simple_query(&unlock).await {
        log::warn!("{stage}: failed to release the stage lock: {e}");
    }
    result.map(|()| report)
}

async fn run_locked(
    j: &Journey,
    stage: Stage,
    opts: &StageOptions,
    live: &deadpool_postgres::ClientWrapper,
    report: &mut StageReport,
) -> anyhow::Result<()> {
    let now = j.clock.now();
    let (from, to) = (now + opts.window.0, now + opts.window.1);
    if !opts.dry_run {
        match ledger::promote_abandoned_on(live, stage.ledger_stage()).await {
            Ok(0) => {}
            Ok(n) => {
                report.counters.add(Counter::InDoubt, n);
                log::warn!("{stage}: {n} delivery(ies) left in 'sending' by a dead run are now in_doubt; see `journeyctl status`");
            }
            Err(e) => {
                report.error();
                record_error(j, opts.dry_run, stage, None, None, &format!("{e:#}")).await;
            }
        }
        // Walk-in bookings whose person now exists get their patient before selecting, so
        // every stage (followups included) sees the row. One statement for all of them.
        match bookings::link_walk_ins_on(live).await {
            Ok(0) => {}
            Ok(n) => log::info!("{stage}: linked {n} walk-in booking(s) to their people rows"),
            Err(e) => {
                report.error();
                record_error(j, opts.dry_run, stage, None, None, &format!("{e:#}")).await;
            }
        }
        // Retries no run of this window would select again end visibly, not silently.
        match ledger::expire_closed_on(live, stage, now, from).await {
            Ok(0) => {}
            Ok(n) => {
                report.counters.add(Counter::Expired, n);
                report.failures += n;
                log::warn!("{stage}: {n} delivery(ies) left for retry expired: their window closed before they could be sent; see `journeyctl audit`");
            }
            Err(e) => {
                report.error();
                record_error(j, opts.dry_run, stage, None, None, &format!("{e:#}")).await;
            }
        }
    }
    // Keyset-paginated chunks: select a page, process it (plan, claim, send, record), then
    // the next page after the last booking of this one. Memory stays bounded by one page.
    let mut after = None;
    let mut left: Option<i64> = opts.limit.map(i64::from);
    let mut total = 0usize;
    loop {
        let page = left.map_or(bookings::PAGE, |l| l.min(bookings::PAGE));
        if page <= 0 || (total > 0 && j.control.stopped().is_some()) {
            break;
        }
        let selected =
            bookings::select_due_page(live, stage.facts(), now, (from, to), after, page).await;
        let (due, next) = match selected {
            Ok(d) => d,
            Err(e) => {
                report.error();
                record_error(j, opts.dry_run, stage, None, None, &format!("{e:#}")).await;
                return Ok(());
            }
        };
        let n = due.len();
        total += n;
        process(
            j,
            stage,
            Trigger::Recovery,
            due,
            opts.dry_run,
            opts.concurrency,
            report,
        )
        .await;
        if (n as i64) < page {
            break;
        }
        after = next;
        left = left.map(|l| l - n as i64);
    }
    log::info!(
        "{stage}: {total} booking(s) due between {} and {}",
        from.format("%Y-%m-%d %H:%M"),
        to.format("%Y-%m-%d %H:%M")
    );
    Ok(())
}

/// Sends the confirmation and therapist notice of one booking now (the webhook's path).
pub async fn confirm_booking(j: &Journey, booking_id: Uuid) -> anyhow::Result<StageReport> {
    let mut report = StageReport::new(Stage::ConfirmationRecovery.ledger_stage());
    let Some(b) = bookings::select_one(&j.db, booking_id, j.clock.now()).await? else {
        anyhow::bail!("booking {booking_id} vanished before its confirmation");
    };
    process(
        j,
        Stage::ConfirmationRecovery,
        Trigger::Webhook,
        vec![b],
        false,
        2,
        &mut report,
    )
    .await;
    Ok(report)
}

/// Sends the cancellation notice (with the invite's `METHOD:CANCEL`) of one booking whose
/// patient got an invite (the webhook's path, after a BOOKING_CANCELLED was committed). The
/// rule is `cancellation_notice::plan`; the delivery goes through the ledger under its own
/// stage, so a second call (a repeated webhook, a retry) never sends it twice.
pub async fn notify_cancellation(j: &Journey, booking_id: Uuid) -> anyhow::Result<StageReport> {
    let mut report = StageReport::new(cancellation_notice::LEDGER_STAGE);
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
        let out = match m {
            MessagePlan::Send(out) => out,
            MessagePlan::Skip {
                counter, reason, ..
            } => {
                report.counters.bump(counter);
                log::info!("cancellation notice of booking {booking_id}: not sent: {reason}");
                continue;
            }
        };
        let key = DeliveryKey {
            booking_id: b.id,
            stage: cancellation_notice::LEDGER_STAGE,
            channel: out.to.channel(),
            role: out.role,
        };
        let stage = Stage::ConfirmationRecovery;
        if super::optout::suppressed_one(j, stage, &key, b.patient_id, &out.to, &mut report).await {
            continue;
        }
        let job = Job {
            booking_id: b.id,
            cal_uid: b.cal_uid.clone(),
            patient_id: b.patient_id,
            key,
            invite: out.invite.then(|| invite_for(j, &b, &out)),
            mark_column: None,
            outgoing: *out,
        };
        // `deliver` takes a Stage for its logs and error events; the notice belongs to the
        // booking's confirmation (the ledger row and `email_sent` carry its own stage).
        let r = deliver_guarded(j, Stage::ConfirmationRecovery, job, false, None, None)
            .await
            .result;
        report.counters.merge(&r.counters);
        report.failures += r.failures;
    }
    Ok(report)
}

/// One message ready to claim and send.
struct Job {
    booking_id: Uuid,
    cal_uid: String,
    patient_id: Option<Uuid>,
    key: DeliveryKey,
    outgoing: Outgoing,
    mark_column: Option<&'static str>,
    invite: Option<String>,
}

#[derive(Default)]
struct JobResult {
    counters: Counters,
    failures: u64,
    planned: Option<Planned>,
    /// Another run had this message already: counted once per booking by the caller.
    taken: Option<Uuid>,
}

impl JobResult {
    fn count(mut self, c: Counter) -> JobResult {
        self.counters.bump(c);
        self
    }
    fn fail(mut self, c: Counter) -> JobResult {
        self.counters.bump(c);
        self.failures += 1;
        self
    }
}

fn is_marked(stage: Stage, role: RecipientRole, b: &DueBooking) -> bool {
    match (stage, role) {
        (_, RecipientRole::Qa) => false,
        (Stage::ConfirmationRecovery, RecipientRole::Patient) => {
            b.client_confirmation_sent_at.is_some()
        }
        (Stage::ConfirmationRecovery, RecipientRole::Therapist) => {
            b.therapist_notification_sent_at.is_some()
        }
        _ => b.stage_mark.is_some(),
    }
}

fn plan_for(stage: Stage, trigger: Trigger, input: &PlanInput<'_>) -> Plan {
    match stage {
        Stage::ConfirmationRecovery => confirmation::plan(input, trigger),
        Stage::Reminder24h => reminders::plan(input, MessageKind::Reminder24h),
        Stage::Reminder1h => reminders::plan(input, MessageKind::Reminder1h),
        Stage::IntroFollowup => followups::intro(input),
        Stage::SessionFollowup => followups::session(input),
        Stage::CancellationRecovery => followups::cancellation(input),
    }
}

#[allow(clippy::too_many_arguments)]
async fn process(
    j: &Journey,
    stage: Stage,
    trigger: Trigger,
    due: Vec<DueBooking>,
    dry_run: bool,
    concurrency: usize,
    report: &mut StageReport,
) {
    let ledger_stage = stage.ledger_stage();
    report.counters.add(Counter::Processed, due.len() as u64);
    if due.is_empty() {
        return;
    }
    let patient_ids: Vec<Uuid> = due.iter().filter_map(|b| b.patient_id).collect();
    let patients: Result<HashMap<Uuid, PatientRow>, String> =
        bookings::load_patients(&j.db, &patient_ids)
            .await
            .map_err(|e| format!("{e:#}"));
    let booking_ids: Vec<Uuid> = due.iter().map(|b| b.id).collect();
    let existing: Result<HashMap<(Uuid, Channel, RecipientRole), LedgerRow>, String> =
        ledger::load(&j.db, &booking_ids, ledger_stage)
            .await
            .map_err(|e| format!("{e:#}"));
    let sms_enabled = j.sms.is_some();
    let now = j.clock.now();
    let mut jobs = Vec::new();
    let mut recovered_patients: HashSet<Uuid> = HashSet::new();
    let optouts = super::optout::Batch::load(j, &due, &patients).await;

    for b in &due {
        let lookup = patients
            .as_ref()
            .and_then(|p| existing.as_ref().map(|l| (p, l)));
        let (patients, existing) = match lookup {
            Ok(found) => found,
            Err(why) => {
                // A failed lookup is an error for every booking it concerns, never "no patient".
                report.error();
                let why = format!("lookup failed: {why}");
                record_error(j, dry_run, stage, Some(b.id), None, &why).await;
                continue;
            }
        };
        let patient = b.patient_id.and_then(|id| patients.get(&id));
        let attendee = PatientRow::attendee_of(b);
        let input = PlanInput {
            booking: b,
            patient,
            attendee: attendee.as_ref(),
            settings: &j.settings,
            now,
            sms_enabled,
        };
        match plan_for(stage, trigger, &input) {
            Plan::Skip {
                counter,
                mark,
                again,
                reason,
            } => {
                report.counters.bump(counter);
                log::debug!("{stage}: booking {} skipped: {reason}", b.id);
                if !again && !dry_run {
                    // The decision goes to the ledger: counted in this run only, and the
                    // booking is not selected again (SPEC §5: skipped with a counted reason).
                    let col = mark
                        .then(|| mark_column(stage, RecipientRole::Patient))
                        .flatten();
                    if let Err(e) = record_booking_skip(j, stage, b, reason, col, now).await {
                        report.error();
                        record_error(j, dry_run, stage, Some(b.id), None, &format!("{e:#}")).await;
                    }
                }
            }
            Plan::Messages(messages) => {
                let mut acted = false;
                for m in messages {
                    match m {
                        MessagePlan::Skip {
                            channel,
                            role,
                            counter,
                            reason,
                        } => {
                            if existing.contains_key(&(b.id, channel, role)) {
                                // Decided and counted by an earlier run.
                                continue;
                            }
                            acted = true;
                            report.counters.bump(counter);
                            log::debug!(
                                "{stage}: booking {} {role} {channel} skipped: {reason}",
                                b.id
                            );
                            let key = DeliveryKey {
                                booking_id: b.id,
                                stage: ledger_stage,
                                channel,
                                role,
                            };
                            if !dry_run {
                                if let Err(e) = ledger::record_skip(
                                    &j.db,
                                    &key,
                                    b.patient_id,
                                    j.run_id,
                                    reason,
                                    None,
                                    now,
                                )
                                .await
                                {
                                    report.error();
                                    record_error(
                                        j,
                                        dry_run,
                                        stage,
                                        Some(b.id),
                                        None,
                                        &format!("{e:#}"),
                                    )
                                    .await;
                                }
                            }
                        }
                        MessagePlan::Send(mut out) => {
                            let channel = out.to.channel();
                            let role = out.role;
                            match existing.get(&(b.id, channel, role)).map(|r| r.status) {
                                Some(DeliveryStatus::Retry) => {}
                                Some(DeliveryStatus::InDoubt) => {
                                    acted = true;
                                    report.counters.bump(Counter::InDoubt);
                                    continue;
                                }
                                Some(_) => continue,
                                None if is_marked(stage, role, b) => continue,
                                None => {}
                            }
                            if super::optout::gate(j, &optouts, stage, b, &mut out, dry_run, report)
                                .await
                            {
                                acted = true;
                                continue;
                            }
                            match super::gate::quiet_hours(j, stage, b, &out, now, dry_run).await {
                                super::gate::Gate::Send => {}
                                super::gate::Gate::Held(counter) => {
                                    acted = true;
                                    report.counters.bump(counter);
                                    continue;
                                }
                                super::gate::Gate::Failed(why) => {
                                    acted = true;
                                    report.error();
                                    record_error(
                                        j,
                                        dry_run,
                                        stage,
                                        Some(b.id),
                                        Some(channel),
                                        &why,
                                    )
                                    .await;
                                    continue;
                                }
                            }
                            if stage == Stage::CancellationRecovery {
                                if let Some(pid) = b.patient_id {
                                    if !recovered_patients.insert(pid) {
                                        acted = true;
                                        report.counters.bump(Counter::SkippedRecentlyRecovered);
                                        if !dry_run {
                                            let reason = "patient gets a recovery email for \
                                                          another booking in this run";
                                            let col = mark_column(stage, role);
                                            if let Err(e) =
                                                record_booking_skip(j, stage, b, reason, col, now)
                                                    .await
                                            {
                                                report.error();
                                                let why = format!("{e:#}");
                                                record_error(
                                                    j,
                                                    false,
                                                    stage,
                                                    Some(b.id),
                                                    None,
                                                    &why,
                                                )
                                                .await;
                                            }
                                        }
                                        continue;
                                    }
                                }
                            }
                            acted = true;
                            jobs.push(Job {
                                booking_id: b.id,
                                cal_uid: b.cal_uid.clone(),
                                patient_id: b.patient_id,
                                key: DeliveryKey {
                                    booking_id: b.id,
                                    stage: ledger_stage,
                                    channel,
                                    role,
                                },
                                invite: out.invite.then(|| invite_for(j, b, &out)),
                                mark_column: mark_column(stage, role),
                                outgoing: *out,
                            });
                        }
                    }
                }
                if !acted {
                    report.counters.bump(Counter::SkippedAlreadySent);
                }
            }
        }
    }

    let results = deliver_all(j, stage, jobs, dry_run, concurrency, report).await;
    let mut taken: HashSet<Uuid> = HashSet::new();
    for r in results {
        report.counters.merge(&r.counters);
        report.failures += r.failures;
        report.planned.extend(r.planned);
        taken.extend(r.taken);
    }
    // Bookings, not messages: one booking whose two messages another run had counts once.
    report
        .counters
        .add(Counter::SkippedAlreadySent, taken.len() as u64);
    report.planned.sort_by(|a, b| {
        (a.booking_id, a.channel, a.recipient_role).cmp(&(
            b.booking_id,
            b.channel,
            b.recipient_role,
        ))
    });
}

/// Messages claimed together (one statement) and recorded together (one statement).
const CLAIM_BATCH: usize = 64;

/// Delivers the jobs, up to `concurrency` at once. Claims go to the ledger in batches (one
/// statement per batch, committed before any message of the batch is sent; the next batch is
/// claimed while this one sends), outcomes are recorded in batches too. Once the run is asked
/// to stop (deadline, signal), jobs not yet started are not sent: their claims are given back
/// (no row: they stay due for the next run, counted `retry_scheduled`), and those in flight
/// get the run's drain bound to finish; the ones still unanswered then are declared
/// `in_doubt` by this run, not left `sending`.
async fn deliver_all(
    j: &Journey,
    stage: Stage,
    jobs: Vec<Job>,
    dry_run: bool,
    concurrency: usize,
    report: &mut StageReport,
) -> Vec<JobResult> {
    let total = jobs.len();
    // Patient-exclusive claims (cancellation recovery) take a lock per patient, and a
    // confirmation is claimed only while its booking is still active, judged right before it
    // is sent: those stages claim one message at a time.
    let batched = !dry_run
        && !matches!(
            stage,
            Stage::CancellationRecovery | Stage::ConfirmationRecovery
        )
        && total > 0;
    let client = if batched {
        match j.db.client().await {
            Ok(c) => Some(c),
            Err(e) => {
                report.error();
                record_error(j, false, stage, None, None, &format!("{e:#}")).await;
                return Vec::new();
            }
        }
    } else {
        None
    };
    let unsent: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
    let mut results = Vec::with_capacity(total);
    let mut pending: Vec<Delivered> = Vec::new();
    let mut cut_short = false;
    {
        let mut stream = match &client {
            Some(client) => {
                let mut batches = Vec::new();
                let mut jobs = jobs.into_iter().peekable();
                while jobs.peek().is_some() {
                    batches.push(jobs.by_ref().take(CLAIM_BATCH).collect::<Vec<_>>());
                }
                let unsent = &unsent;
                futures::stream::iter(batches)
                    .then(move |batch| claim_batch(j, client, batch, unsent))
                    .flat_map(futures::stream::iter)
                    .map(move |(job, pre)| deliver_guarded(j, stage, job, false, pre, Some(unsent)))
                    .boxed()
            }
            None => futures::stream::iter(jobs)
                .map(|job| deliver_guarded(j, stage, job, dry_run, None, None))
                .boxed(),
        }
        .buffer_unordered(concurrency.max(1));
        let drain = j.control.drain_expired();
        tokio::pin!(drain);
        loop {
            tokio::select! {
                biased;
                next = stream.next() => match next {
                    Some(d) if d.outcome.is_some() => {
                        pending.push(d);
                        if pending.len() >= CLAIM_BATCH {
                            if let Some(c) = &client {
                                record_pending(j, stage, c, &mut pending, &mut results).await;
                            }
                        }
                    }
                    Some(d) => results.push(d.result),
                    None => break,
                },
                () = &mut drain => {
                    cut_short = true;
                    break;
                }
            }
        }
    }
    if let Some(c) = &client {
        record_pending(j, stage, c, &mut pending, &mut results).await;
        // Claimed in a batch but never handed to a provider: given back.
        let ids: Vec<Uuid> = unsent
            .lock()
            .map(|u| u.iter().copied().collect())
            .unwrap_or_default();
        if let Err(e) = ledger::release_unsent(c, j.run_id, &ids).await {
            report.error();
            record_error(j, false, stage, None, None, &format!("{e:#}")).await;
        }
    }
    if !cut_short || dry_run {
        return results;
    }
    let ledger_stage = stage.ledger_stage();
    let abandoned = match ledger::abandon_in_flight(&j.db, j.run_id, ledger_stage).await {
        Ok(n) => n,
        Err(e) => {
            report.error();
            record_error(j, false, stage, None, None, &format!("{e:#}")).await;
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
    let unstarted = (total - results.len()) as u64;
    report
        .counters
        .add(Counter::RetryScheduled, unstarted.saturating_sub(abandoned));
    results
}

/// Claims one batch of jobs in one statement. Jobs whose channel is stopped, or all of them
/// once the run is stopping, are not claimed (`deliver` counts them for the next run).
async fn claim_batch(
    j: &Journey,
    client: &deadpool_postgres::ClientWrapper,
    batch: Vec<Job>,
    unsent: &Mutex<HashSet<Uuid>>,
) -> Vec<(Job, Option<anyhow::Result<Claim>>)> {
    let stopping = j.control.stopped().is_some();
    let (claim, skip): (Vec<Job>, Vec<Job>) = batch
        .into_iter()
        .partition(|job| !stopping && !j.control.channel_stopped(job.outgoing.to.channel()));
    let mut out: Vec<(Job, Option<anyhow::Result<Claim>>)> =
        skip.into_iter().map(|job| (job, None)).collect();
    let Some(first) = claim.first() else {
        return out;
    };
    let ledger_stage = first.key.stage;
    // One statement per channel, side by side on their own connections: the email and the
    // SMS of a booking are independent, and a claim waiting on another run's uncommitted row
    // of one channel does not hold up the other.
    let channels: Vec<Channel> = {
        let mut c: Vec<Channel> = claim.iter().map(|job| job.key.channel).collect();
        c.sort_by_key(|ch| ch.as_str());
        c.dedup();
        c
    };
    let claims = channels.iter().enumerate().map(|(i, &channel)| {
        let items: Vec<ledger::BatchClaim<'_>> = claim
            .iter()
            .filter(|job| job.key.channel == channel)
            .map(|job| ledger::BatchClaim {
                key: &job.key,
                patient_id: job.patient_id,
                recipient_masked: job.outgoing.to.masked(),
            })
            .collect();
        async move {
            let other;
            let conn = if i == 0 {
                client
            } else {
                other = j.db.client().await?;
                &other
            };
            ledger::claim_batch(
                conn,
                ledger_stage,
                &items,
                j.run_id,
                &j.application_name,
                &j.message_id_domain,
                ledger_stage == Stage::ConfirmationRecovery.ledger_stage(),
            )
            .await
        }
    });
    let answered = futures::future::join_all(claims).await;
    // Back in the jobs' order: each channel's answers are in its jobs' order.
    let claimed: anyhow::Result<Vec<Claim>> = (|| {
        let mut per_channel = Vec::new();
        for a in answered {
            per_channel.push(a?.into_iter());
        }
        claim
            .iter()
            .map(|job| {
                let i = channels.iter().position(|&c| c == job.key.channel);
                i.and_then(|i| per_channel[i].next())
                    .ok_or_else(|| anyhow::anyhow!("the batch claim left a message unanswered"))
            })
            .collect()
    })();
    match claimed {
        Ok(claims) => {
            if let Ok(mut u) = unsent.lock() {
                u.extend(claims.iter().filter_map(|c| match c {
                    Claim::Claimed { id, .. } => Some(*id),
                    _ => None,
                }));
            }
            out.extend(
                claim
                    .into_iter()
                    .zip(claims)
                    .map(|(job, c)| (job, Some(Ok(c)))),
            );
        }
        Err(e) => {
            let why = format!("{e:#}");
            out.extend(
                claim
                    .into_iter()
                    .map(|job| (job, Some(Err(anyhow::anyhow!("{why}"))))),
            );
        }
    }
    out
}

/// Records the outcomes waiting in `pending` in one statement and moves their results to
/// `results`. When the statement fails, each of them is an error: its row stays `sending`
/// and becomes `in_doubt`, never resent blindly.
async fn record_pending(
    j: &Journey,
    stage: Stage,
    client: &deadpool_postgres::ClientWrapper,
    pending: &mut Vec<Delivered>,
    results: &mut Vec<JobResult>,
) {
    if pending.is_empty() {
        return;
    }
    let mut batch = std::mem::take(pending);
    let outcomes: Vec<ledger::OwnedOutcome> =
        batch.iter_mut().filter_map(|d| d.outcome.take()).collect();
    match ledger::record_batch(client, &outcomes, j.clock.now()).await {
        Ok(()) => results.extend(batch.into_iter().map(|d| d.result)),
        Err(e) => {
            for (d, o) in batch.into_iter().zip(&outcomes) {
                let why = format!(
                    "{e:#}; delivery {} will be declared in doubt",
                    o.delivery_id
                );
                record_error(j, false, stage, Some(d.booking_id), Some(d.channel), &why).await;
                results.push(JobResult::default().fail(Counter::Errors));
            }
        }
    }
}

/// The calendar invite of one message (RFC 5545 / RFC 5546): the booking's calendar UID
/// (carried over from the first booking across reschedules), its SEQUENCE (one higher for the
/// cancellation), the therapist as ORGANIZER (the sender's mailbox when the therapist has no
/// address) and the recipient as ATTENDEE.
fn invite_for(j: &Journey, b: &DueBooking, out: &Outgoing) -> String {
    let ctx = &out.context;
    let cancelled = out.kind == MessageKind::CancellationNotice;
    let therapist_name = display_name::sanitize(&ctx.therapist_name);
    let what = match (out.role, ctx.booking_kind) {
        (RecipientRole::Therapist, BookingKind::Intro) => "Kennenlerngespräch".to_string(),
        (RecipientRole::Therapist, _) => "Therapiesitzung".to_string(),
        (_, BookingKind::Intro) => format!("Kennenlerngespräch mit {therapist_name}"),
        (_, _) => format!("Therapiesitzung mit {therapist_name}"),
    };
    let summary = if cancelled {
        format!("Abgesagt: {what}")
    } else {
        what
    };
    let uid = b
        .ical_uid
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .unwrap_or(&b.cal_uid);
    // A rescheduled booking carrying an earlier booking's UID is at least the second version,
    // even when no sequence was stored for it.
    let stored = u32::try_from(b.ical_sequence.unwrap_or(0)).unwrap_or(0);
    let sequence = if uid != b.cal_uid {
        stored.max(1)
    } else {
        stored
    } + u32::from(cancelled);
    let organizer_email = b
        .therapist
        .as_ref()
        .and_then(|t| t.email.as_deref())
        .and_then(|e| EmailAddress::parse(e).ok())
        .map(|e| e.as_str().to_string())
        .or_else(|| j.mailer.as_ref().map(|m| m.sender_address()));
    let attendee_email = match &out.to {
        Recipient::Email(e) => Some(e.as_str()),
        Recipient::Sms(_) => None,
    };
    let location = ctx.video_url.as_deref().or(ctx.location.as_deref());
    crate::ics::invite_at(
        &crate::ics::Invite {
            uid,
            sequence,
            start: ctx.start,
            end: ctx.end,
            summary: &summary,
            description: location.unwrap_or(""),
            organizer: organizer_email.as_deref().map(|email| crate::ics::Person {
                name: Some(&therapist_name),
                email,
            }),
            attendee: attendee_email.map(|email| crate::ics::Person {
                name: out.to_name.as_deref(),
                email,
            }),
            location,
            cancelled,
        },
        j.clock.now(),
    )
}

/// Writes a booking-level skip to the ledger: the stage's (email, patient) key, and for the
/// confirmation also the therapist's, so neither recipient is selected again.
async fn record_booking_skip(
    j: &Journey,
    stage: Stage,
    b: &DueBooking,
    reason: &str,
    mark: Option<&'static str>,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let roles: &[RecipientRole] = match stage {
        Stage::ConfirmationRecovery => &[RecipientRole::Patient, RecipientRole::Therapist],
        _ => &[RecipientRole::Patient],
    };
    for &role in roles {
        let key = DeliveryKey {
            booking_id: b.id,
            stage: stage.ledger_stage(),
            channel: Channel::Email,
            role,
        };
        let col = if role == RecipientRole::Patient {
            mark
        } else {
            None
        };
        ledger::record_skip(&j.db, &key, b.patient_id, j.run_id, reason, col, now).await?;
    }
    Ok(())
}

/// [`deliver`], with a panic inside it caught: one delivery that panics (a value a library
/// cannot encode, a bug) never takes down the batch. It is counted as an error, its claimed row
/// becomes `failed` with the reason, and the `error` event is written. The panic's own message
/// is not recorded: it may quote the data that caused it.
async fn deliver_guarded(
    j: &Journey,
    stage: Stage,
    job: Job,
    dry_run: bool,
    pre: Option<anyhow::Result<Claim>>,
    unsent: Option<&Mutex<HashSet<Uuid>>>,
) -> Delivered {
    let key = job.key.clone();
    let role = job.outgoing.role;
    let booking_id = job.booking_id;
    let channel = job.key.channel;
    match std::panic::AssertUnwindSafe(deliver(j, stage, job, dry_run, pre, unsent))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(_panic) => {
            let reason = format!(
                "sending the {} {role} {} panicked (a defect on this booking's data); \
                 not retried",
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
                if let Err(e) =
                    ledger::record_panicked(&j.db, &key, j.run_id, &reason, &event).await
                {
                    log::error!("{stage}: booking {}: {e:#}", key.booking_id);
                }
            }
            Delivered {
                result: JobResult::default().fail(Counter::Errors),
                outcome: None,
                booking_id,
                channel,
            }
        }
    }
}

/// What [`deliver`] did with one message. With `outcome`, the outcome still has to be
/// recorded (a batch records it): `result` holds once it is.
struct Delivered {
    result: JobResult,
    outcome: Option<ledger::OwnedOutcome>,
    booking_id: Uuid,
    channel: Channel,
}

impl From<(JobResult, &Job)> for Delivered {
    fn from((result, job): (JobResult, &Job)) -> Delivered {
        Delivered {
            result,
            outcome: None,
            booking_id: job.booking_id,
            channel: job.key.channel,
        }
    }
}

/// Renders, claims, sends and records one message. With `pre`, the message was claimed in a
/// batch already (its claim's answer), and the outcome is handed back for the batch to
/// record; `unsent` holds the batch's claimed ids not handed to a provider yet.
async fn deliver(
    j: &Journey,
    stage: Stage,
    job: Job,
    dry_run: bool,
    pre: Option<anyhow::Result<Claim>>,
    unsent: Option<&Mutex<HashSet<Uuid>>>,
) -> Delivered {
    let res = JobResult::default();
    let batched = pre.is_some();
    let out = &job.outgoing;
    let channel = out.to.channel();
    let sent_counter = match channel {
        Channel::Email => Counter::SentEmail,
        Channel::Sms => Counter::SentSms,
    };
    let rendered = render(j, out);
    let (subject, text, html, copy) = match rendered {
        Ok(r) => r,
        Err(e) => {
            let why = format!("{e:#}");
            record_error(j, dry_run, stage, Some(job.booking_id), Some(channel), &why).await;
            if let Some(Ok(Claim::Claimed { id, .. })) = &pre {
                // Claimed in a batch: recorded as `retry` with the error, with the batch.
                if let Some(u) = unsent {
                    if let Ok(mut u) = u.lock() {
                        u.remove(id);
                    }
                }
                return Delivered {
                    outcome: Some(ledger::OwnedOutcome {
                        delivery_id: *id,
                        status: DeliveryStatus::Retry,
                        provider_message_id: None,
                        error: Some(format!("the message could not be rendered: {why}")),
                        mark_column: None,
                        event: None,
                    }),
                    ..(res.fail(Counter::Errors), &job).into()
                };
            }
            if !dry_run && !batched {
                // In the ledger as `retry`, so `audit` sees the channel that failed and a
                // later run (fixed template) sends it on its own, whatever the other did.
                if let Err(e) = record_render_error(j, &job, &why).await {
                    let why = format!("{e:#}");
                    record_error(j, false, stage, Some(job.booking_id), Some(channel), &why).await;
                }
            }
            return (res.fail(Counter::Errors), &job).into();
        }
    };
    if dry_run {
        // A dry run sends nothing, so it counts nothing as sent: `planned` lists it.
        let mut res = res;
        res.planned = Some(Planned {
            booking_id: job.booking_id,
            cal_uid: job.cal_uid.clone(),
            stage: stage.as_str(),
            channel: channel.as_str(),
            recipient_role: out.role.as_str(),
            recipient: out.to.masked(),
            subject,
        });
        return (res, &job).into();
    }

    if j.control.stopped().is_some() || j.control.channel_stopped(channel) {
        // Not claimed: no row, so the next run (or this one's retry row) takes it again. (A
        // batch's claim stays in `unsent` and is given back.)
        log::debug!(
            "{stage}: booking {} {} {channel}: not claimed, the run is stopping or the channel is stopped",
            job.booking_id,
            out.role
        );
        return (res.count(Counter::RetryScheduled), &job).into();
    }
    let claim = match pre {
        Some(claim) => claim,
        None => claim_job(j, &job, Some(stage)).await,
    };
    let (delivery_id, message_id, attempt) = match claim {
        Ok(Claim::Claimed {
            id,
            message_id,
            attempt,
        }) => (id, message_id, attempt),
        Ok(Claim::Taken(DeliveryStatus::InDoubt)) => {
            return (res.count(Counter::InDoubt), &job).into()
        }
        Ok(Claim::PatientTaken) => {
            return (res.count(Counter::SkippedRecentlyRecovered), &job).into()
        }
        // Cancelled (or otherwise no longer active) since the run selected it.
        Ok(Claim::Inactive) => return (res.count(Counter::SkippedInactive), &job).into(),
        Ok(Claim::Taken(_)) => {
            let mut res = res;
            res.taken = Some(job.booking_id);
            return (res, &job).into();
        }
        Err(e) => {
            record_error(
                j,
                false,
                stage,
                Some(job.booking_id),
                Some(channel),
                &format!("{e:#}"),
            )
            .await;
            return (res.fail(Counter::Errors), &job).into();
        }
    };
    if batched {
        // Claimed ahead in a batch: stamped (and committed) as being sent before the provider
        // is contacted, so a process that dies leaves in doubt only what a provider may have.
        // Never sent unstamped: the claim stays the batch's to give back.
        let stamped = match j.db.client().await {
            Ok(c) => ledger::mark_send_started(&c, delivery_id, j.run_id).await,
            Err(e) => Err(e),
        };
        let why = match stamped {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "delivery {delivery_id} is no longer this run's claim (given back after its \
                 lease passed, or taken by another run): not sent by this run"
            )),
            Err(e) => Some(format!("{e:#}; not sent, given back for the next run")),
        };
        if let Some(why) = why {
            record_error(j, false, stage, Some(job.booking_id), Some(channel), &why).await;
            return (res.fail(Counter::Errors), &job).into();
        }
    }
    // Handed to the provider from here on: no longer the batch's to give back.
    if let Some(u) = unsent {
        if let Ok(mut u) = u.lock() {
            u.remove(&delivery_id);
        }
    }

    let outcome = match (&out.to, &j.mailer, &j.sms) {
        (Recipient::Email(to), Some(mailer), _) => {
            let mut attachments = job
                .invite
                .as_ref()
                .map(|ics| {
                    vec![Attachment {
                        filename: "termin.ics".to_string(),
                        content_type: format!(
                            "text/calendar; charset=utf-8; method={}",
                            if out.kind == MessageKind::CancellationNotice {
                                "CANCEL"
                            } else {
                                "REQUEST"
                            }
                        ),
                        body: ics.clone().into_bytes(),
                    }]
                })
                .unwrap_or_default();
            attachments.extend(copy.map(|html| Attachment {
                filename: "kopie-benachrichtigung.html".to_string(),
                content_type: "text/html; charset=utf-8".to_string(),
                body: html.into_bytes(),
            }));
            mailer
                .send(&OutgoingEmail {
                    to: to.clone(),
                    to_name: out.to_name.clone(),
                    subject: subject.clone().unwrap_or_default(),
                    text,
                    html: html.unwrap_or_default(),
                    attachments,
                    message_id,
                    list_unsubscribe: out.context.unsubscribe_url.clone(),
                })
                .await
        }
        (Recipient::Sms(to), _, Some(sms)) => {
            let opts = super::gate::sms_options(j, out, delivery_id);
            sms.send_with(to, &text, &opts).await
        }
        _ => SendOutcome::Permanent {
            reason: format!("no {channel} transport configured"),
        },
    };

    let base_props = serde_json::json!({
        "booking_id": job.booking_id,
        "stage": job.key.stage,
        "channel": channel.as_str(),
        "recipient_role": out.role.as_str(),
        "delivery_id": delivery_id,
        "run_id": j.run_id,
        "attempt": attempt,
    });
    let with = |extra: serde_json::Value| {
        let mut p = base_props.clone();
        if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        p
    };
    // A failed delivery: its ledger state, its counter, and an `error` event.
    let failure = |status, counter, reason: &String, word: &str| {
        (
            status,
            counter,
            true,
            None,
            Some(reason.clone()),
            error_row(with(
                serde_json::json!({"source": "deliver", "reason": reason, "outcome": word}),
            )),
        )
    };
    let (status, counter, failed, provider_id, error, event) = match &outcome {
        SendOutcome::Sent { provider_id } => (
            DeliveryStatus::Sent,
            sent_counter,
            false,
            provider_id.clone(),
            None,
            EventRow {
                kind: match channel {
                    Channel::Email => "email_sent",
                    Channel::Sms => "sms_sent",
                },
                level: "info",
                properties: with(serde_json::json!({"kind": out.kind.event_kind()})),
            },
        ),
        SendOutcome::Transient { reason } => failure(
            DeliveryStatus::Retry,
            Counter::RetryScheduled,
            reason,
            "retry",
        ),
        SendOutcome::Permanent { reason } => {
            failure(DeliveryStatus::Failed, Counter::Errors, reason, "failed")
        }
        SendOutcome::OptedOut { reason, .. } => (
            DeliveryStatus::Skipped,
            Counter::SkippedOptedOut,
            false,
            None,
            Some(format!("recipient opted out: {reason}")),
            EventRow {
                kind: "sms_opted_out",
                level: "info",
                properties: base_props.clone(),
            },
        ),
        // The number itself cannot receive SMS: never attempted again (suppressed below).
        SendOutcome::Unreachable { reason, .. } => (
            DeliveryStatus::Skipped,
            Counter::SkippedInvalidPhone,
            false,
            None,
            Some(format!("number rejected by the provider: {reason}")),
            EventRow {
                kind: "sms_unreachable",
                level: "warn",
                properties: base_props.clone(),
            },
        ),
        SendOutcome::Ambiguous { reason } => failure(
            DeliveryStatus::InDoubt,
            Counter::InDoubt,
            reason,
            "in_doubt",
        ),
        // Nothing left: retryable once the setting is fixed. The channel stops for the rest
        // of the run: every further message would meet the same refusal.
        SendOutcome::Misconfigured { setting, reason } => {
            j.control.stop_channel(channel, setting);
            failure(
                DeliveryStatus::Retry,
                Counter::RetryScheduled,
                reason,
                "retry",
            )
        }
    };
    if let Some(e) = &error {
        log::warn!(
            "{stage}: booking {} {} {}: {status}: {e}",
            job.booking_id,
            out.role,
            channel
        );
    }
    // A number Twilio refused for good (STOP, invalid, not a mobile) is suppressed now.
    let res = match super::optout::after_send(j, stage, job.booking_id, &out.to, &outcome).await {
        true => res,
        false => res.fail(Counter::Errors),
    };
    let done = if failed {
        res.fail(counter)
    } else {
        res.count(counter)
    };
    if batched {
        return Delivered {
            outcome: Some(ledger::OwnedOutcome {
                delivery_id,
                status,
                provider_message_id: provider_id,
                error,
                mark_column: job.mark_column,
                event: Some(event),
            }),
            ..(done, &job).into()
        };
    }
    let recorded = ledger::record(
        &j.db,
        delivery_id,
        &Outcome {
            status,
            provider_message_id: provider_id.as_deref(),
            error: error.as_deref(),
            mark_column: job.mark_column,
            now: j.clock.now(),
            event: Some(event),
        },
    )
    .await;
    if let Err(e) = recorded {
        // The row stays in 'sending' and becomes in_doubt: never resent blindly.
        let why = format!("{e:#}; delivery {delivery_id} will be declared in doubt");
        record_error(j, false, stage, Some(job.booking_id), Some(channel), &why).await;
        return (JobResult::default().fail(Counter::Errors), &job).into();
    }
    (done, &job).into()
}

/// Subject, text, HTML of a message, and the HTML of the copy it carries (QA). A QA copy's
/// text follows the message's own text, headed by the copy's subject.
#[allow(clippy::type_complexity)]
fn render(
    j: &Journey,
    out: &Outgoing,
) -> anyhow::Result<(Option<String>, String, Option<String>, Option<String>)> {
    match out.to.channel() {
        Channel::Email => {
            let r = j.templates.render_email(out.kind, &out.context)?;
            let mut text = r.text;
            let copy = match out.carries_copy_of {
                Some(kind) => {
                    let c = j.templates.render_email(kind, &out.context)?;
                    text.push_str(&format!(
                        "\n\n----- Kopie: {} -----\nBetreff: {}\n\n{}",
                        kind.event_kind(),
                        c.subject,
                        c.text
                    ));
                    Some(c.html)
                }
                None => None,
            };
            Ok((Some(r.subject), text, Some(r.html), copy))
        }
        Channel::Sms => {
            let body = j.templates.render_sms(out.kind, &out.context)?;
            Ok((None, body, None, None))
        }
    }
}

/// Claims one job's ledger row. With its `stage`, the stage's claim rules apply (cancellation
/// recovery is exclusive per patient for 72 h; a confirmation needs the booking still active);
/// without, the row is claimed plainly (to record a render error).
async fn claim_job(j: &Journey, job: &Job, stage: Option<Stage>) -> anyhow::Result<Claim> {
    let masked = job.outgoing.to.masked();
    ledger::claim(
        &j.db,
        &ClaimRequest {
            key: &job.key,
            patient_id: job.patient_id,
            run_id: j.run_id,
            claimed_by: &j.application_name,
            recipient_masked: &masked,
            message_id_domain: &j.message_id_domain,
            patient_exclusive_since: stage
                .and_then(Stage::patient_exclusive_period)
                .map(|p| j.clock.now() - p),
            require_active: stage.is_some()
                && job.key.stage == Stage::ConfirmationRecovery.ledger_stage(),
        },
    )
    .await
}

/// A message that could not be rendered: claimed and recorded as `retry` with the error.
async fn record_render_error(j: &Journey, job: &Job, why: &str) -> anyhow::Result<()> {
    let claim = claim_job(j, job, None).await?;
    let Claim::Claimed { id, .. } = claim else {
        // Another run has it: nothing of ours to record.
        return Ok(());
    };
    ledger::record(
        &j.db,
        id,
        &Outcome {
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

fn error_row(properties: serde_json::Value) -> EventRow {
    EventRow {
        kind: "error",
        level: "error",
        properties,
    }
}

/// Logs an error of a stage run (with the booking's id when there is one) and writes its
/// `error` event; the caller counts it. Writing the event is best effort: the error is
/// already counted and logged, and a dry run writes nothing.
async fn record_error(
    j: &Journey,
    dry_run: bool,
    stage: Stage,
    booking_id: Option<Uuid>,
    channel: Option<Channel>,
    reason: &str,
) {
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
    if let Err(e) = runs::event(&j.db, "error", "error", &props).await {
        log::error!("failed to write an error event: {e:#}");
    }
}
