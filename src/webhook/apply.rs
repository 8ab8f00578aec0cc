//! Applying one received webhook body: verify → parse → store the receipt (committed on its
//! own) → apply in one transaction that also settles the receipt, then say whether the
//! booking's confirmations are due (docs/ARCHITECTURE.md, "The path of a webhook body").
//!
//! What it guarantees:
//! - Nothing is stored for a body whose signature does not verify (401).
//! - Every verified body is recorded in `cal_webhook_receipts` (hash, trigger, uid, outcome,
//!   the body for replays) BEFORE it is applied, and settled with a `cal_webhook_received`
//!   event. A failed apply rolls back the booking but leaves the receipt (outcome `error`), so
//!   the event, which Cal.com never sends again, can be re-applied with
//!   `journeyctl webhook --replay RECEIPT_ID` ([`replay`]).
//! - The same bytes twice have one effect, whether they come from Cal.com or from a replay.
//! - NULs in the body are stripped by the parser (PostgreSQL's text cannot hold them).
//! - The booking's row is locked, its status decided by the lifecycle table
//!   (`domain::next_status`: a late CREATED never revives a cancelled booking, a flat
//!   MEETING_ENDED never completes one that fell through, an older event does not override a
//!   newer status), and an event never writes NULL over a known value.
//! - Error messages never carry a database row (see [`public_message`]).
//! - A bad metadata value is a logged warning, never a lost booking.
//!
//! It does not send anything: the caller sends confirmations after the commit, through the
//! delivery ledger, so `confirmation-recovery` can finish what a crash interrupted.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::parse::{parse, CalEvent, Trigger};
use super::verify::{verify_signature, VerifyError};
use crate::db::webhook::{self as sql, BookingUpsert, Receipt};
use crate::db::Db;
use crate::domain::{
    next_status, BookingKind, BookingStatus, EventOrder, StatusEvent, WebhookOutcome,
};
use crate::secret::Secret;

/// Bodies larger than this are refused with 413 (Cal.com's bodies are a few KiB).
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// What happened to one body.
#[derive(Clone, Debug)]
pub(crate) struct Handled {
    pub http_status: u16,
    pub outcome: WebhookOutcome,
    pub message: String,
    pub trigger: Option<String>,
    pub cal_uid: Option<String>,
    /// The booking whose confirmation and therapist notice should go out now (its status is
    /// active and the event booked it).
    pub confirm_booking: Option<Uuid>,
    /// The active booking this BOOKING_CANCELLED just cancelled: its patient may hold an
    /// invite that must be withdrawn (`stages::driver::notify_cancellation`).
    pub notify_cancelled: Option<Uuid>,
    /// The stored body (`cal_webhook_receipts.id`), for `journeyctl webhook --replay`.
    pub receipt_id: Option<Uuid>,
}

impl Handled {
    fn reject(http_status: u16, outcome: WebhookOutcome, message: impl Into<String>) -> Handled {
        Handled {
            http_status,
            outcome,
            message: message.into(),
            trigger: None,
            cal_uid: None,
            confirm_booking: None,
            notify_cancelled: None,
            receipt_id: None,
        }
    }

    /// A body that was stored (receipt `receipt`) and settled with `outcome`.
    fn settled(
        event: &CalEvent,
        receipt: Uuid,
        outcome: WebhookOutcome,
        message: String,
    ) -> Handled {
        Handled {
            http_status: 200,
            outcome,
            message,
            trigger: Some(event.trigger.as_str().to_string()),
            cal_uid: event.uid.clone(),
            confirm_booking: None,
            notify_cancelled: None,
            receipt_id: Some(receipt),
        }
    }
}

/// How to check the signature.
pub(crate) enum Verification<'a> {
    Required(Option<&'a Secret>),
    /// `journeyctl webhook --no-verify`, for replays of recorded bodies.
    Skipped,
}

pub(crate) async fn handle(
    db: &Db,
    verification: Verification<'_>,
    body: &[u8],
    signature: Option<&str>,
    now: DateTime<Utc>,
) -> Handled {
    if body.len() > MAX_BODY {
        return Handled::reject(
            413,
            WebhookOutcome::TooLarge,
            format!("body over {MAX_BODY} bytes"),
        );
    }
    if let Verification::Required(secret) = verification {
        if let Err(e) = verify_signature(secret, body, signature) {
            return Handled::reject(401, WebhookOutcome::Unauthorized, why_refused(e));
        }
    }
    let hash = hex::encode(Sha256::digest(body));
    let event = match parse(body) {
        Ok(e) => e,
        Err(e) => {
            let msg = format!("{e}");
            let receipt = Receipt {
                trigger: None,
                cal_uid: None,
                body_sha256: &hash,
                outcome: WebhookOutcome::Invalid,
                error: Some(&msg),
                body: None,
                received_at: now,
            };
            if let Err(db_err) = record_only(db, receipt, body).await {
                log::error!("webhook: {}", public_message(&db_err));
            }
            return Handled::reject(400, WebhookOutcome::Invalid, msg);
        }
    };
    for w in &event.warnings {
        log::warn!(
            "webhook {} {}: {w}",
            event.trigger.as_str(),
            event.uid.as_deref().unwrap_or("-")
        );
    }
    // A redelivery of bytes already applied is answered without storing them again; the
    // check and the receipt are one statement, sent with the apply's BEGIN, locks and reads.
    let target = Target::of(&event);
    let text = stored_text(body);
    let opened = sql::open_receipt_and_begin(
        db,
        &sql::NewReceipt {
            trigger: Some(event.trigger.as_str()),
            cal_uid: uid_of(&event),
            body_sha256: &hash,
            body: &text,
            received_at: now,
        },
        &target.lookup(&event, &hash),
    )
    .await;
    match (opened.receipt, opened.applying) {
        (Ok(Some(receipt)), Ok((tx, resolved))) => {
            match applied_on(tx, resolved, &event, &target, receipt, now).await {
                Ok(h) => h,
                Err(e) => failed(db, &event, Some(receipt), e).await,
            }
        }
        (Ok(Some(receipt)), Err(e)) => failed(db, &event, Some(receipt), e).await,
        (Ok(None), applying) => {
            if let Ok((tx, _)) = applying {
                tx.rollback().await;
            }
            duplicate(&event, None)
        }
        (Err(e), applying) => {
            if let Ok((tx, _)) = applying {
                tx.rollback().await;
            }
            failed(db, &event, None, e).await
        }
    }
}

/// The answer to a body whose signature does not verify.
fn why_refused(e: VerifyError) -> &'static str {
    match e {
        VerifyError::SecretNotConfigured => {
            "CAL_WEBHOOK_SECRET is not set: every webhook is refused"
        }
        VerifyError::MissingSignature => "no X-Cal-Signature-256 header",
        VerifyError::NoSecretProvided => {
            "signature is 'no-secret-provided': set the same secret in Cal.com"
        }
        VerifyError::Malformed => "signature is not 64 hex characters",
        VerifyError::Mismatch => "signature does not match the body",
    }
}

/// Why `journeyctl webhook --replay` cannot re-apply a receipt (exit 2).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    #[error("no webhook receipt {0} (see cal_webhook_receipts.id)")]
    NotFound(Uuid),
    #[error(
        "webhook receipt {0} has no body any more (removed by prune after the retention period)"
    )]
    Pruned(Uuid),
}

/// Re-applies a stored body: the signature was verified when it arrived. Applied or
/// acknowledged bodies (this receipt's or the same bytes received again) are a `duplicate`,
/// so replaying twice has one effect.
pub(crate) async fn replay(db: &Db, receipt: Uuid, now: DateTime<Utc>) -> anyhow::Result<Handled> {
    let stored = sql::load_receipt(db, receipt)
        .await?
        .ok_or(ReplayError::NotFound(receipt))?;
    let body = stored.body.ok_or(ReplayError::Pruned(receipt))?;
    let event = match parse(body.as_bytes()) {
        Ok(e) => e,
        Err(e) => {
            let mut h = Handled::reject(400, WebhookOutcome::Invalid, format!("{e}"));
            h.receipt_id = Some(receipt);
            return Ok(h);
        }
    };
    log::info!(
        "webhook --replay {receipt}: {} (was {})",
        event.trigger.as_str(),
        stored.outcome
    );
    Ok(apply_receipt(db, &event, receipt, &stored.body_sha256, now).await)
}

/// Applies the body of a stored receipt; a failure is recorded on the receipt (outcome
/// `error`) in a transaction of its own, the booking's changes are rolled back.
async fn apply_receipt(
    db: &Db,
    event: &CalEvent,
    receipt: Uuid,
    hash: &str,
    now: DateTime<Utc>,
) -> Handled {
    match apply(db, event, receipt, hash, now).await {
        Ok(h) => h,
        Err(e) => failed(db, event, Some(receipt), e).await,
    }
}

/// A body whose handling failed: logged, an `error` event, the receipt settled as `error`,
/// 500.
async fn failed(db: &Db, event: &CalEvent, receipt: Option<Uuid>, e: anyhow::Error) -> Handled {
    // Never `{e:#}`: a database error's DETAIL holds the failing row (patient data).
    let msg = public_message(&e);
    log::error!("webhook {}: {msg}", event.trigger.as_str());
    let props = serde_json::json!({
        "source": "webhook",
        "reason": msg,
        "trigger": event.trigger.as_str(),
        "cal_uid": event.uid,
        "booking_id": null,
        "receipt_id": receipt,
    });
    if let Err(e2) = crate::db::runs::error_event(db, &props).await {
        log::error!(
            "webhook: failed to write the error event: {}",
            public_message(&e2)
        );
    }
    if let Some(id) = receipt {
        match settle_error(db, id, &msg).await {
            Ok(()) => log::error!(
                "webhook receipt {id} kept; re-apply it with: journeyctl webhook --replay {id}"
            ),
            Err(e3) => log::error!(
                "webhook receipt {id} stays 'received' (replayable): {}",
                public_message(&e3)
            ),
        }
    }
    Handled {
        http_status: 500,
        outcome: WebhookOutcome::Error,
        message: msg,
        trigger: Some(event.trigger.as_str().to_string()),
        cal_uid: event.uid.clone(),
        confirm_booking: None,
        notify_cancelled: None,
        receipt_id: receipt,
    }
}

/// One statement, committed on its own.
async fn settle_error(db: &Db, receipt: Uuid, msg: &str) -> anyhow::Result<()> {
    let client = db.client().await?;
    sql::settle_receipt(&client, receipt, WebhookOutcome::Error, Some(msg)).await
}

fn duplicate(event: &CalEvent, receipt: Option<Uuid>) -> Handled {
    Handled {
        http_status: 200,
        outcome: WebhookOutcome::Duplicate,
        message: "the same body was already applied; nothing changed".into(),
        trigger: Some(event.trigger.as_str().to_string()),
        cal_uid: event.uid.clone(),
        confirm_booking: None,
        notify_cancelled: None,
        receipt_id: receipt,
    }
}

/// The event's booking uid; blank counts as absent.
fn uid_of(event: &CalEvent) -> Option<&str> {
    event.uid.as_deref().filter(|u| !u.trim().is_empty())
}

/// The body as it is kept in `cal_webhook_receipts.body` (text): invalid UTF-8 replaced, raw
/// NUL bytes (only ever in bodies that are not JSON) removed, as PostgreSQL refuses them.
fn stored_text(body: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    text.retain(|c| c != '\0');
    text
}

/// Stores a body that is not applied (`receipt` says why; its `body` is filled from `body`),
/// with its event, in one statement committed on its own.
async fn record_only(db: &Db, receipt: Receipt<'_>, body: &[u8]) -> anyhow::Result<()> {
    let client = db.client().await?;
    let body = stored_text(body);
    sql::record_receipt(
        &client,
        &Receipt {
            body: Some(&body),
            ..receipt
        },
    )
    .await?;
    Ok(())
}

/// Text without surrounding whitespace; blank counts as absent.
fn trimmed(text: Option<&str>) -> Option<&str> {
    text.map(str::trim).filter(|s| !s.is_empty())
}

/// What the event says happened to its booking, for the lifecycle table; `None` when it says
/// nothing about the status (a no-show update that marks nobody).
fn status_event(event: &CalEvent) -> Option<StatusEvent> {
    match &event.trigger {
        Trigger::BookingCreated | Trigger::BookingRescheduled => Some(StatusEvent::Booked {
            accepted: !event
                .status
                .as_deref()
                .is_some_and(|s| BookingStatus::parse(s) == Ok(BookingStatus::Pending)),
        }),
        Trigger::BookingRequested => Some(StatusEvent::Requested),
        Trigger::BookingCancelled => Some(StatusEvent::Cancelled),
        Trigger::BookingRejected => Some(StatusEvent::Rejected),
        Trigger::MeetingStarted => Some(StatusEvent::MeetingStarted),
        Trigger::MeetingEnded => Some(StatusEvent::MeetingEnded),
        Trigger::BookingNoShowUpdated => event
            .attendees
            .iter()
            .any(|a| a.no_show == Some(true))
            .then_some(StatusEvent::NoShowGuest),
        Trigger::AfterGuestsNoShow => Some(StatusEvent::NoShowGuest),
        Trigger::AfterHostsNoShow => Some(StatusEvent::NoShowHost),
        Trigger::Ping | Trigger::Unknown(_) => None,
    }
}

/// The status a booking has after `event`, decided on its locked row. Returns the resulting
/// status and the text to write (`None`: keep the stored text, e.g. another program's lower
/// case). A stored text this program does not know is logged and decided like NULL: the
/// event's own status replaces it.
fn decide(
    locked: &sql::Locked,
    event: Option<StatusEvent>,
    event_at: Option<DateTime<Utc>>,
    uid: &str,
) -> (Option<BookingStatus>, Option<BookingStatus>) {
    let current = match &locked.status {
        None => None,
        Some(Ok(s)) => Some(*s),
        Some(Err(e)) => {
            log::warn!("booking {uid}: {e}; the event decides its status");
            None
        }
    };
    let Some(event) = event else {
        return (current, None);
    };
    let next = next_status(
        current,
        event,
        EventOrder::of(event_at, locked.last_event_at),
    );
    let write = (next != current).then_some(next).flatten();
    (next, write)
}

/// An error's text for HTTP clients, stdout, logs and events. A PostgreSQL error is reduced
/// to its SQLSTATE and message: its DETAIL ("Failing row contains (…)") and, for data
/// exceptions (class 22), its message quote row values, i.e. patient data.
pub(crate) fn public_message(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            parts.push(match pg.as_db_error() {
                Some(db) => describe_db_error(db),
                None => pg.to_string(),
            });
            break;
        }
        if let Some(db) = cause.downcast_ref::<tokio_postgres::error::DbError>() {
            parts.push(describe_db_error(db));
            break;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}

fn describe_db_error(db: &tokio_postgres::error::DbError) -> String {
    let code = db.code().code();
    if code.starts_with("22") {
        let column = db
            .column()
            .map(|c| format!(" in column {c}"))
            .unwrap_or_default();
        format!("database error {code}: invalid value{column} (value not shown)")
    } else {
        format!("database error {code}: {}", db.message())
    }
}

/// What the new uid of a reschedule takes over from the booking it replaces.
struct Moved {
    booking_kind: Option<String>,
    /// The first booking's calendar UID, so calendars move the entry instead of adding one.
    ical_uid: String,
    /// Higher than the old invite's, and at least Cal.com's own `iCalSequence`.
    ical_sequence: i32,
}

/// BOOKING_RESCHEDULED, old side: the booking `old_uid` ends RESCHEDULED (even if its CREATED
/// has not arrived yet) pointing to the new uid, and the new booking (`upsert`) fills what its
/// payload lacks from it.
async fn move_away(
    tx: &deadpool_postgres::ClientWrapper,
    old_uid: &str,
    event: &CalEvent,
    upsert: &mut BookingUpsert<'_>,
) -> anyhow::Result<Moved> {
    let locked_old = sql::lock_booking(tx, old_uid).await?;
    let old = sql::carried_over(tx, old_uid).await?;
    upsert.patient_id = upsert.patient_id.or(old.patient_id);
    upsert.therapist_id = upsert.therapist_id.or(old.therapist_id);
    upsert.match_id = upsert.match_id.or(old.match_id);
    upsert.is_test |= old.is_test;
    let (_, old_status) = decide(
        &locked_old,
        Some(StatusEvent::RescheduledAway),
        event.created_at,
        old_uid,
    );
    sql::upsert_booking(
        tx,
        &BookingUpsert {
            cal_uid: old_uid,
            trigger: upsert.trigger,
            therapist_id: upsert.therapist_id,
            patient_id: upsert.patient_id,
            match_id: upsert.match_id,
            booking_kind: upsert.booking_kind.or(old.booking_kind.as_deref()),
            status: old_status.map(BookingStatus::as_str),
            is_test: upsert.is_test,
            rescheduled_to_uid: Some(upsert.cal_uid),
            ical_uid: Some(&locked_old.ical_uid),
            event_at: event.created_at,
            now: upsert.now,
            ..Default::default()
        },
    )
    .await?;
    let sequence = locked_old.ical_sequence.unwrap_or(0).saturating_add(1);
    Ok(Moved {
        booking_kind: old.booking_kind,
        ical_uid: locked_old.ical_uid,
        ical_sequence: event.ical_sequence.map_or(sequence, |s| s.max(sequence)),
    })
}

/// Which booking an event is about: its uid (blank counts as absent), and for a reschedule to a
/// new uid the old one, which is locked first (in [`move_away`]).
struct Target<'e> {
    /// A PING or an unknown trigger: verified, understood, nothing to store.
    acknowledged_only: bool,
    uid: Option<&'e str>,
    old_uid: Option<&'e str>,
}

impl<'e> Target<'e> {
    fn of(event: &'e CalEvent) -> Target<'e> {
        let uid = uid_of(event);
        let old_uid = match event.reschedule_uid.as_deref() {
            Some(old) if event.trigger == Trigger::BookingRescheduled && Some(old) != uid => {
                Some(old)
            }
            _ => None,
        };
        Target {
            acknowledged_only: matches!(event.trigger, Trigger::Ping | Trigger::Unknown(_)),
            uid,
            old_uid,
        }
    }

    /// What the event names, for the one read after the locks. The booking is locked there
    /// unless there is none, or a reschedule's old uid must be locked before it.
    fn lookup(&self, event: &'e CalEvent, hash: &'e str) -> sql::Lookup<'e> {
        sql::Lookup {
            body_sha256: hash,
            organizer_username: event.organizer_username.as_deref(),
            therapist_id: event.kh.therapist_id,
            patient_id: event.kh.patient_id,
            patient_email: event
                .patient()
                .and_then(|a| a.email.as_deref())
                .map(str::trim),
            match_id: event.kh.match_id,
            cal_uid: if self.acknowledged_only || self.old_uid.is_some() {
                None
            } else {
                self.uid
            },
        }
    }
}

/// The booking kind: the event's own, else the one the therapist's event type stands for.
fn booking_kind_of(event: &CalEvent, therapist: Option<&sql::TherapistRef>) -> Option<BookingKind> {
    event.kh.booking_kind.or_else(|| {
        let (t, et) = (therapist?, event.event_type_id?);
        if t.intro_event_type == Some(et) {
            Some(BookingKind::Intro)
        } else if t.full_event_type == Some(et) {
            Some(BookingKind::FullSession)
        } else {
            None
        }
    })
}

/// The metadata merged into the booking's: where the booking came from and what the parser
/// left out.
fn metadata_of(event: &CalEvent) -> Option<serde_json::Value> {
    let mut metadata = serde_json::Map::new();
    if let Some(s) = &event.kh.source {
        metadata.insert("kh_source".into(), s.clone().into());
    }
    if !event.warnings.is_empty() {
        metadata.insert("webhook_warnings".into(), event.warnings.clone().into());
    }
    (!metadata.is_empty()).then_some(serde_json::Value::Object(metadata))
}

/// The booking row as the event describes it, before its status and calendar identity are
/// decided on the locked row. Therapist: organizer username, else the booking link's
/// `kh_therapist_id`. Patient: `kh_patient_id` when that person exists, else the newest person
/// with the attendee's email.
fn upsert_of<'e>(
    event: &'e CalEvent,
    uid: &'e str,
    resolved: &sql::Resolved,
    now: DateTime<Utc>,
) -> BookingUpsert<'e> {
    let attendee = event.patient();
    let is_cancel = event.trigger == Trigger::BookingCancelled;
    BookingUpsert {
        cal_uid: uid,
        trigger: event.trigger.as_str(),
        organizer_username: event.organizer_username.as_deref(),
        event_type_id: event.event_type_id,
        start_time: event.start_time,
        end_time: event.end_time,
        therapist_id: resolved.therapist.as_ref().map(|t| t.id),
        patient_id: resolved.patient_id,
        match_id: resolved.match_id,
        booking_kind: booking_kind_of(event, resolved.therapist.as_ref()).map(BookingKind::as_str),
        status: None,
        is_test: event.is_test(),
        metadata: metadata_of(event),
        video_url: event.video_url.as_deref(),
        location: event.location.as_deref(),
        cancelled_at: is_cancel.then(|| event.created_at.unwrap_or(now)),
        cancellation_reason: event.cancellation_reason.as_deref().filter(|_| is_cancel),
        request_reschedule: is_cancel.then(|| event.request_reschedule.unwrap_or(false)),
        rescheduled_from_uid: None,
        rescheduled_to_uid: None,
        // Flat MEETING_* bodies carry only the booking's own timestamps, not when the event
        // happened: they must not take part in ordering (a meeting ends after its booking).
        event_at: match event.trigger {
            Trigger::MeetingStarted | Trigger::MeetingEnded => None,
            _ => event.created_at,
        },
        ical_sequence: event.ical_sequence,
        ical_uid: None,
        attendee_email: trimmed(attendee.and_then(|a| a.email.as_deref())),
        attendee_name: trimmed(attendee.and_then(|a| a.name.as_deref())),
        attendee_phone: trimmed(attendee.and_then(|a| a.phone.as_deref())),
        now,
    }
}

/// A verified body with nothing to store (a PING, an unknown trigger, or no booking uid): the
/// receipt is settled `acknowledged`.
async fn acknowledge(
    tx: sql::ApplyTx,
    event: &CalEvent,
    receipt: Uuid,
    acknowledged_only: bool,
) -> anyhow::Result<Handled> {
    sql::settle_receipt(tx.conn()?, receipt, WebhookOutcome::Acknowledged, None).await?;
    tx.commit().await?;
    let trigger = event.trigger.as_str();
    let message = if acknowledged_only {
        format!("{trigger}: acknowledged, nothing to do")
    } else {
        format!("{trigger} without a booking uid: acknowledged, nothing stored")
    };
    Ok(Handled::settled(
        event,
        receipt,
        WebhookOutcome::Acknowledged,
        message,
    ))
}

/// A booking first heard of now was never confirmed; unknown status text is not active.
fn was_active(locked: &sql::Locked) -> bool {
    !locked.new
        && match &locked.status {
            None => true,
            Some(parsed) => parsed
                .as_ref()
                .is_ok_and(|s| BookingStatus::is_active(Some(*s))),
        }
}

/// Applies one event of a stored receipt in one transaction (`journeyctl webhook --replay`).
async fn apply(
    db: &Db,
    event: &CalEvent,
    receipt: Uuid,
    hash: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Handled> {
    let target = Target::of(event);
    let (tx, resolved) = sql::begin_and_resolve(db, &target.lookup(event, hash)).await?;
    applied_on(tx, resolved, event, &target, receipt, now).await
}

/// Applies one event in its transaction `tx`, which has locked and read what it names
/// (`resolved`): moves a rescheduled booking's old uid away, decides the status on the locked
/// row, writes the booking and settles the receipt `applied` (or `duplicate`, `acknowledged`),
/// and commits.
async fn applied_on(
    tx: sql::ApplyTx,
    resolved: sql::Resolved,
    event: &CalEvent,
    target: &Target<'_>,
    receipt: Uuid,
    now: DateTime<Utc>,
) -> anyhow::Result<Handled> {
    if resolved.duplicate {
        sql::settle_receipt(tx.conn()?, receipt, WebhookOutcome::Duplicate, None).await?;
        tx.commit().await?;
        return Ok(duplicate(event, Some(receipt)));
    }
    let uid = match target.uid {
        Some(uid) if !target.acknowledged_only => uid,
        _ => return acknowledge(tx, event, receipt, target.acknowledged_only).await,
    };
    if resolved.patient_id_unknown {
        log::warn!(
            "webhook {} {uid}: kh_patient_id names no person; trying the email",
            event.trigger.as_str()
        );
    }
    let mut upsert = upsert_of(event, uid, &resolved, now);
    // A reschedule: the old uid is moved away first, and the new one inherits what it knew.
    let moved = match target.old_uid {
        Some(old_uid) => {
            let moved = move_away(tx.conn()?, old_uid, event, &mut upsert).await?;
            upsert.rescheduled_from_uid = Some(old_uid);
            Some(moved)
        }
        None => None,
    };
    if upsert.booking_kind.is_none() {
        upsert.booking_kind = moved.as_ref().and_then(|m| m.booking_kind.as_deref());
    }
    let locked = match resolved.locked {
        Some(locked) => locked,
        None => sql::lock_booking(tx.conn()?, uid).await?,
    };
    let was_active = was_active(&locked);
    let (status, write) = decide(&locked, status_event(event), upsert.event_at, uid);
    upsert.status = write.map(BookingStatus::as_str);
    match &moved {
        Some(m) => {
            upsert.ical_uid = Some(&m.ical_uid);
            upsert.ical_sequence = Some(m.ical_sequence);
        }
        None => upsert.ical_uid = Some(&locked.ical_uid),
    }
    let stored = sql::upsert_settle_and_commit(tx, &upsert, receipt).await?;
    Ok(applied(event, receipt, uid, &stored, status, was_active))
}

/// The answer to an applied event, and what it made due: the confirmations of a booking it
/// booked that is active, the cancellation notice of an active booking it cancelled.
fn applied(
    event: &CalEvent,
    receipt: Uuid,
    uid: &str,
    stored: &sql::Upserted,
    status: Option<BookingStatus>,
    was_active: bool,
) -> Handled {
    let message = format!(
        "{} {uid}: stored as {}",
        event.trigger.as_str(),
        stored.status.as_deref().unwrap_or("(no status)")
    );
    let mut handled = Handled::settled(event, receipt, WebhookOutcome::Applied, message);
    let booked = matches!(
        event.trigger,
        Trigger::BookingCreated | Trigger::BookingRescheduled
    );
    if booked && BookingStatus::is_active(status) {
        handled.confirm_booking = Some(stored.id);
    }
    let is_cancel = event.trigger == Trigger::BookingCancelled;
    if is_cancel && was_active && status == Some(BookingStatus::Cancelled) {
        handled.notify_cancelled = Some(stored.id);
    }
    handled
}
