//! `journeyctl webhook`: one Cal.com body from stdin or a file, for replays and for wiring
//! into any web server. `journeyctl serve`: the same behind an HTTP listener.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::cli::GlobalArgs;
use crate::clock::Clock;
use crate::config::{ConfigError, Settings};
use crate::domain::WebhookOutcome;
use crate::exit::ExitStatus;
use crate::stages::driver::{confirm_booking, notify_cancellation};
use crate::stages::Journey;
use crate::webhook::apply::{handle, public_message, Handled, ReplayError, Verification, MAX_BODY};
use crate::webhook::SIGNATURE_HEADER;

fn require_secret(settings: &Settings, no_verify: bool) -> Result<(), ConfigError> {
    if settings.cal_webhook_secret.is_none() && !no_verify {
        return Err(ConfigError::new(
            "CAL_WEBHOOK_SECRET is not set: every webhook would be refused. Set it to the secret \
             configured in Cal.com (or pass --no-verify to replay a recorded body)",
        ));
    }
    Ok(())
}

/// Sends the confirmations of a stored booking; failures are logged and counted in the ledger
/// (`confirmation-recovery` finishes what fails here).
async fn confirm(j: &Journey, booking_id: Uuid) -> bool {
    match confirm_booking(j, booking_id).await {
        Ok(report) => {
            log::info!(
                "confirmation of booking {booking_id}: {}",
                report_counters(&report)
            );
            !report.failed()
        }
        Err(e) => {
            log::error!(
                "confirmation of booking {booking_id}: {}",
                public_message(&e)
            );
            false
        }
    }
}

/// Sends the cancellation notice of a booking this webhook just cancelled (withdraws the
/// patient's invite); failures are logged and counted in the ledger.
async fn notify_cancelled(j: &Journey, booking_id: Uuid) -> bool {
    match notify_cancellation(j, booking_id).await {
        Ok(report) => !report.failed(),
        Err(e) => {
            log::error!(
                "cancellation notice of booking {booking_id}: {}",
                public_message(&e)
            );
            false
        }
    }
}

/// What a handled body makes due once its booking is committed: the one list that `webhook`,
/// `serve` (after the 200) and the demo act on.
#[derive(Clone, Copy, Debug)]
pub(super) enum AfterCommit {
    Confirm(Uuid),
    NotifyCancelled(Uuid),
}

impl AfterCommit {
    pub(super) fn of(h: &Handled) -> Vec<AfterCommit> {
        h.confirm_booking
            .map(AfterCommit::Confirm)
            .into_iter()
            .chain(h.notify_cancelled.map(AfterCommit::NotifyCancelled))
            .collect()
    }

    /// Sends it through the delivery ledger (exactly once however often it is asked).
    pub(super) async fn send(self, j: &Journey) -> anyhow::Result<crate::stages::StageReport> {
        match self {
            AfterCommit::Confirm(id) => confirm_booking(j, id).await,
            AfterCommit::NotifyCancelled(id) => notify_cancellation(j, id).await,
        }
    }
}

/// Connections of `journeyctl webhook` (one body): the apply's transaction, then the
/// confirmation's: its two messages claimed and recorded on one, their send-started stamps on
/// another.
const ONE_BODY_CONNECTIONS: usize = 3;

/// `journeyctl webhook [--file F] [--signature HEX] [--no-verify]`
pub(crate) async fn webhook(
    g: &GlobalArgs,
    settings: Settings,
    clock: Clock,
    file: Option<PathBuf>,
    signature: Option<String>,
    no_verify: bool,
) -> anyhow::Result<ExitStatus> {
    require_secret(&settings, no_verify)?;
    let body = match &file {
        Some(path) => std::fs::read(path)
            .map_err(|e| ConfigError::new(format!("cannot read {}: {e}", path.display())))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut buf)
                .context("Failed to read the body from stdin")?;
            buf
        }
    };
    if no_verify {
        log::warn!(
            "--no-verify: the body's signature is NOT checked; use only for recorded bodies"
        );
    }
    let j = super::journey(g, settings, clock, false, ONE_BODY_CONNECTIONS).await?;
    let verification = if no_verify {
        Verification::Skipped
    } else {
        Verification::Required(j.settings.cal_webhook_secret.as_ref())
    };
    let handled = handle(
        &j.db,
        verification,
        &body,
        signature.as_deref(),
        clock.now(),
    )
    .await;
    finish(g, &j, handled).await
}

/// `journeyctl webhook --replay RECEIPT_ID`: re-applies a stored body, then sends what it
/// makes due, exactly as when it arrived.
pub(crate) async fn replay(
    g: &GlobalArgs,
    settings: Settings,
    clock: Clock,
    receipt: Uuid,
) -> anyhow::Result<ExitStatus> {
    let j = super::journey(g, settings, clock, false, ONE_BODY_CONNECTIONS).await?;
    let handled = match crate::webhook::apply::replay(&j.db, receipt, clock.now()).await {
        Ok(h) => h,
        Err(e) => {
            return Err(match e.downcast::<ReplayError>() {
                Ok(why) => ConfigError::new(why.to_string()).into(),
                Err(e) => anyhow::anyhow!("{}", public_message(&e)),
            })
        }
    };
    finish(g, &j, handled).await
}

/// Sends what a handled body made due, prints the result, and gives the exit status.
async fn finish(g: &GlobalArgs, j: &Journey, handled: Handled) -> anyhow::Result<ExitStatus> {
    let mut confirmed = None;
    if let Some(id) = handled.confirm_booking {
        confirmed = Some(confirm(j, id).await);
    }
    let mut notified = None;
    if let Some(id) = handled.notify_cancelled {
        notified = Some(notify_cancelled(j, id).await);
    }
    print_handled(g.json, &handled, confirmed, notified);
    // Applied or acknowledged: 0, unless its confirmation or cancellation notice failed.
    // Rejected or failed: 1.
    Ok(
        if handled.http_status == 200 && confirmed != Some(false) && notified != Some(false) {
            ExitStatus::Ok
        } else {
            ExitStatus::Failed
        },
    )
}

fn print_handled(json: bool, h: &Handled, confirmed: Option<bool>, notified: Option<bool>) {
    if json {
        crate::outln!(
            "{}",
            serde_json::json!({
                "status": h.http_status,
                "outcome": h.outcome,
                "message": h.message,
                "trigger": h.trigger,
                "cal_uid": h.cal_uid,
                "confirmation_sent": confirmed,
                "cancellation_notice_sent": notified,
                "receipt_id": h.receipt_id,
            })
        );
    } else {
        crate::outln!("{} {}: {}", h.http_status, h.outcome, h.message);
        if let (Some(id), WebhookOutcome::Error) = (h.receipt_id, h.outcome) {
            crate::outln!("the body is kept: re-apply it with journeyctl webhook --replay {id}");
        }
        match confirmed {
            Some(true) => crate::outln!("confirmations handled (see the delivery ledger)"),
            Some(false) => {
                crate::outln!(
                    "confirmations FAILED: confirmation-recovery will retry within its window"
                )
            }
            None => {}
        }
        if notified == Some(false) {
            crate::outln!("cancellation notice FAILED (see the delivery ledger)");
        }
    }
}

struct ServeState {
    journey: Journey,
    /// The webhooks' own connections, so a backlog of confirmations never makes a webhook
    /// wait for a connection (and the other way round).
    ingest: crate::db::Db,
    fixed_now: bool,
    /// Bookings committed whose confirmations (or cancellation notice) are due. Never full:
    /// the 200 waits for the commit only. The committed booking is what counts: what is still
    /// queued when `serve` stops or dies is found again by the next start
    /// ([`owed_at_start`]) and by `confirmation-recovery`.
    after_commit: mpsc::UnboundedSender<AfterCommit>,
    /// Jobs queued or in flight, for the shutdown log.
    pending: Arc<AtomicUsize>,
    /// Webhooks being handled now: while there are any, confirmations yield to them.
    webhooks_in_flight: Arc<AtomicUsize>,
}

/// Counts a webhook as in flight until dropped (also when its client hangs up).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Longest `--drain-timeout` taken: far beyond any unit's stop timeout.
const MAX_DRAIN: Duration = Duration::from_secs(600);

/// Longest grace, after the drain deadline, for sends in flight to record their outcome (a
/// quarter of the drain bound when that is less): an SMTP or Twilio answer takes a second or
/// two, and the rest of the drain bound is the unit's, not ours.
const MAX_SEND_GRACE: Duration = Duration::from_secs(5);

/// How long one request (a webhook, a Twilio callback, an unsubscribe) may take before it is
/// answered 408: an apply takes milliseconds, so a request this slow is stuck on the database,
/// and Cal.com and Twilio send it again.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How far back `serve` looks at start for confirmations a previous `serve` left unsent: what
/// is older is `confirmation-recovery`'s (it takes bookings created over 10 minutes ago).
const RESUME_HORIZON: Duration = Duration::from_secs(15 * 60);

fn drain_bound(raw: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(raw.trim()).map_err(|e| {
        ConfigError::new(format!(
            "--drain-timeout {raw:?} is not a duration ({e}); use e.g. 20s"
        ))
    })?;
    if d > MAX_DRAIN {
        return Err(ConfigError::new(format!(
            "--drain-timeout {raw:?} is too large: at most 10m (and below the unit's \
             TimeoutStopSec)"
        )));
    }
    Ok(d)
}

/// `journeyctl serve [--listen ADDR] [--drain-timeout DUR]`
///
/// A webhook is answered as soon as its booking is committed; its confirmations go out from
/// worker tasks, independent of the request (a client that hangs up loses nothing). On
/// SIGTERM/SIGINT it stops accepting, and within `drain_timeout` of the signal finishes
/// the requests in flight and the queued confirmations. What is still unfinished then is
/// abandoned: a booking is committed before its 200, so the next `serve` and
/// `confirmation-recovery` send the confirmations that were only queued; a send cut off in
/// flight keeps its `sending` row and is declared in doubt (never resent blindly). The
/// process exits 0 either way, well before systemd's TimeoutStopSec would SIGKILL it in the
/// middle of everything.
pub(crate) async fn serve(
    g: &GlobalArgs,
    settings: Settings,
    clock: Clock,
    fixed_now: bool,
    listen: SocketAddr,
    drain_timeout: &str,
) -> anyhow::Result<ExitStatus> {
    use crate::db::{SERVE_CONFIRM_CONNECTIONS, SERVE_INGEST_CONNECTIONS};
    let drain = drain_bound(drain_timeout)?;
    require_secret(&settings, false)?;
    let j = super::journey(g, settings, clock, false, SERVE_CONFIRM_CONNECTIONS).await?;
    let ingest = crate::db::connect_as(
        &crate::config::database_url(g)?,
        SERVE_INGEST_CONNECTIONS,
        &j.application_name,
    )
    .await?;
    // Not fatal: the pool then connects and prepares on the first webhooks.
    if let Err(e) = crate::db::webhook::warm_ingest(&ingest, SERVE_INGEST_CONNECTIONS).await {
        log::warn!("serve: {}", public_message(&e));
    }
    // The same for the confirmation pages' connections.
    if let Err(e) = j.db.open_ahead(SERVE_CONFIRM_CONNECTIONS).await {
        log::warn!("serve: {}", public_message(&e));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ConfigError::new(format!("cannot listen on {listen}: {e}")))?;
    let local = listener.local_addr()?;

    // Confirmations go out after the 200, from worker tasks; on shutdown they drain the queue.
    let (tx, rx) = mpsc::unbounded_channel::<AfterCommit>();
    let pending = Arc::new(AtomicUsize::new(0));
    let webhooks_in_flight = Arc::new(AtomicUsize::new(0));
    owed_at_start(&j, &tx, &pending).await;
    let worker = tokio::spawn(confirmation_worker(
        j.clone(),
        fixed_now,
        rx,
        pending.clone(),
        webhooks_in_flight.clone(),
    ));
    let state = Arc::new(ServeState {
        journey: j,
        ingest,
        fixed_now,
        after_commit: tx,
        pending: pending.clone(),
        webhooks_in_flight,
    });
    let app = router(state.clone());
    crate::outln!(
        "listening on http://{local} (POST /api/public/cal/webhook, POST /api/public/twilio/status, GET/POST /api/public/unsubscribe, GET /healthz)"
    );
    log::info!("serve: listening on {local}");
    let deadline = run_until_stopped(listener, app, drain).await?;
    // The last sender closes the queue: the worker ends once it is empty.
    let control = state.journey.control.clone();
    drop(state);
    drain_worker(worker, deadline, drain, &control, &pending).await;
    Ok(ExitStatus::Ok)
}

/// Serves until SIGTERM/SIGINT (or the listener fails on its own), then gives the requests in
/// flight until `drain` after the signal. Returns that deadline, which bounds the rest of the
/// shutdown too.
async fn run_until_stopped(
    listener: tokio::net::TcpListener,
    app: Router,
    drain: Duration,
) -> anyhow::Result<tokio::time::Instant> {
    let signalled = Arc::new(tokio::sync::Notify::new());
    let graceful = {
        let signalled = signalled.clone();
        async move {
            shutdown_signal().await;
            signalled.notify_one();
        }
    };
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(graceful)
            .await
    });
    // A handle is polled again only if it has not finished.
    let ended = tokio::select! {
        ended = &mut server => Some(ended),
        () = signalled.notified() => None,
    };
    let deadline = tokio::time::Instant::now() + drain;
    log::info!(
        "serve: stopping; finishing requests and queued confirmations for at most {}",
        humantime::format_duration(drain)
    );
    let ended = match ended {
        Some(ended) => Some(ended),
        None => tokio::time::timeout_at(deadline, &mut server).await.ok(),
    };
    match ended {
        Some(ended) => ended
            .context("HTTP server task failed")?
            .context("HTTP server failed")?,
        None => {
            server.abort();
            log::warn!("serve: requests still in flight at the drain deadline were cut off");
        }
    }
    Ok(deadline)
}

/// Lets the confirmation worker finish its queue until `deadline`. Past it: no more claims
/// (what is queued stays unclaimed, for the next start and confirmation-recovery), and the
/// sends in flight get a short grace to record their outcome, so that only a send still
/// unanswered after it can end in doubt.
async fn drain_worker(
    mut worker: tokio::task::JoinHandle<()>,
    deadline: tokio::time::Instant,
    drain: Duration,
    control: &crate::stages::RunControl,
    pending: &AtomicUsize,
) {
    if tokio::time::timeout_at(deadline, &mut worker).await.is_ok() {
        log::info!("serve: stopped");
        return;
    }
    control.request_stop(crate::stages::StopReason::Terminate);
    let grace = (drain / 4).min(MAX_SEND_GRACE);
    if tokio::time::timeout(grace, &mut worker).await.is_ok() {
        log::info!("serve: stopped; queued confirmations are left to confirmation-recovery");
        return;
    }
    worker.abort();
    let left = pending.load(Ordering::SeqCst);
    log::warn!(
        "serve: drain deadline reached with {left} confirmation job(s) unfinished; \
         confirmation-recovery sends what was not claimed, a send cut off in flight is \
         declared in doubt"
    );
    log::info!("serve: stopped");
}

/// The one place serve's routes are put together (other routes join with `.merge(...)`).
fn router(state: Arc<ServeState>) -> Router {
    let journey = &state.journey;
    Router::new()
        .route("/api/public/cal/webhook", post(receive))
        .route("/healthz", get(healthz))
        .merge(super::unsubscribe::router(journey))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state.clone())
        .merge(super::twilio_status::router(journey))
}

/// Queues what earlier `serve` processes committed and did not get out (stopped at their
/// drain deadline, killed, or the host died), before the first new webhook is taken.
async fn owed_at_start(
    j: &Journey,
    queue: &mpsc::UnboundedSender<AfterCommit>,
    pending: &AtomicUsize,
) {
    let now = j.clock.now();
    let since = now - chrono::Duration::from_std(RESUME_HORIZON).unwrap_or_default();
    match crate::db::webhook::owed_after_commit(&j.db, now, since).await {
        Ok(owed) => {
            if !owed.is_empty() {
                log::info!(
                    "serve: {} booking(s) committed earlier still owe a confirmation or notice",
                    owed.len()
                );
            }
            for (id, confirm) in owed {
                pending.fetch_add(1, Ordering::SeqCst);
                let _ = queue.send(if confirm {
                    AfterCommit::Confirm(id)
                } else {
                    AfterCommit::NotifyCancelled(id)
                });
            }
        }
        // Not fatal: confirmation-recovery covers them too.
        Err(e) => log::error!(
            "serve: cannot read the confirmations still owed: {}",
            public_message(&e)
        ),
    }
}

/// Pages of confirmations sent at once while webhooks are being answered: confirmations cost
/// far more (rendering, the ledger, SMTP) than storing a booking, and on a small host they
/// would take the CPU that the answers need. They are committed, so they can wait; once no
/// webhook is in flight, [`SERVE_CONFIRM_PAGES`](crate::db::SERVE_CONFIRM_PAGES) run at once.
const CONFIRM_PAGES_UNDER_LOAD: usize = 1;

/// Bookings confirmed together as one page: what is queued when a page starts, up to this
/// many (2 messages each: one batch claim and one batch record). One query loads them, and
/// their claims and outcomes share statements, so a burst of webhooks costs a few statements
/// per page, not per message.
const CONFIRM_PAGE: usize = crate::stages::CLAIM_BATCH / 2;

/// Sends the confirmations and cancellation notices queued by `receive`: what is queued when
/// a page starts, up to [`CONFIRM_PAGE`] bookings, goes out as one page, at most
/// [`SERVE_CONFIRM_PAGES`](crate::db::SERVE_CONFIRM_PAGES) pages at once
/// ([`CONFIRM_PAGES_UNDER_LOAD`] while webhooks are in flight). A lone webhook's booking is a
/// page of one and goes at once. Aborting it (the drain deadline) aborts the sends in flight
/// and drops the queue.
async fn confirmation_worker(
    journey: Journey,
    fixed_now: bool,
    mut rx: mpsc::UnboundedReceiver<AfterCommit>,
    pending: Arc<AtomicUsize>,
    webhooks_in_flight: Arc<AtomicUsize>,
) {
    let limit = || {
        if webhooks_in_flight.load(Ordering::SeqCst) > 0 {
            CONFIRM_PAGES_UNDER_LOAD
        } else {
            crate::db::SERVE_CONFIRM_PAGES
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut jobs = Vec::with_capacity(CONFIRM_PAGE);
    while rx.recv_many(&mut jobs, CONFIRM_PAGE).await > 0 {
        let mut jj = journey.clone();
        if !fixed_now {
            // Each page is judged at its own start, not at start-up.
            jj.clock = Clock::system();
        }
        let page = std::mem::replace(&mut jobs, Vec::with_capacity(CONFIRM_PAGE));
        let pending = pending.clone();
        tasks.spawn(async move {
            let n = page.len();
            send_page(&jj, page).await;
            pending.fetch_sub(n, Ordering::SeqCst);
        });
        while tasks.len() >= limit() {
            let _ = tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// One page of the worker: the confirmations together, then the cancellation notices (few:
/// one each). Failures are logged and counted in the ledger; `confirmation-recovery` (and the
/// next `serve`) finish what fails here.
async fn send_page(j: &Journey, page: Vec<AfterCommit>) {
    let mut confirm = Vec::new();
    let mut notify = Vec::new();
    for job in page {
        match job {
            AfterCommit::Confirm(id) if !confirm.contains(&id) => confirm.push(id),
            AfterCommit::Confirm(_) => {}
            AfterCommit::NotifyCancelled(id) => notify.push(id),
        }
    }
    if !confirm.is_empty() {
        let sends = crate::db::SERVE_CONFIRM_SENDS;
        match crate::stages::driver::confirm_bookings(j, &confirm, sends).await {
            Ok((report, missing)) => {
                for id in missing {
                    log::error!("booking {id} vanished before its confirmation");
                }
                log::info!(
                    "confirmation of {} booking(s): {}",
                    confirm.len(),
                    report_counters(&report)
                );
            }
            Err(e) => log::error!(
                "confirmation of {} booking(s): {}; confirmation-recovery sends them",
                confirm.len(),
                public_message(&e)
            ),
        }
    }
    for id in notify {
        notify_cancelled(j, id).await;
    }
}

/// A report's non-zero counters, `name=n` each, for a log line.
fn report_counters(report: &crate::stages::StageReport) -> String {
    report
        .counters
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{}={n}", c.as_str()))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn receive(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Its own task: a client that hangs up cancels this handler, never the apply and the
    // queueing of what it made due.
    let task = tokio::spawn(async move {
        let _in_flight = InFlight::new(&state.webhooks_in_flight);
        let now = if state.fixed_now {
            state.journey.clock.now()
        } else {
            Clock::system().now()
        };
        let handled = handle(
            &state.ingest,
            Verification::Required(state.journey.settings.cal_webhook_secret.as_ref()),
            &body,
            signature.as_deref(),
            now,
        )
        .await;
        log::info!(
            "webhook {} {}: {} {}",
            handled.trigger.as_deref().unwrap_or("-"),
            handled.cal_uid.as_deref().unwrap_or("-"),
            handled.http_status,
            handled.outcome
        );
        for job in AfterCommit::of(&handled) {
            state.pending.fetch_add(1, Ordering::SeqCst);
            if state.after_commit.send(job).is_err() {
                state.pending.fetch_sub(1, Ordering::SeqCst);
                log::error!(
                    "the send queue is closed (serve is stopping): {job:?} is not sent now; \
                     the next serve and confirmation-recovery send missing confirmations"
                );
            }
        }
        handled
    });
    let (status, outcome, message) = match task.await {
        Ok(h) => (
            StatusCode::from_u16(h.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            h.outcome,
            h.message,
        ),
        Err(e) => {
            log::error!("webhook: the handler failed: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                WebhookOutcome::Error,
                "internal error".to_string(),
            )
        }
    };
    (
        status,
        axum::Json(serde_json::json!({"outcome": outcome, "message": message})),
    )
}

async fn healthz(State(state): State<Arc<ServeState>>) -> (StatusCode, &'static str) {
    if state.ingest.ping().await {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
    }
}
