//! SQL of webhook ingestion: receipts, resolution of therapist and patient, the locked read of
//! a booking's lifecycle facts and the upsert of `cal_bookings`. Everything here runs inside
//! the caller's transaction, except [`open_receipt`] and [`load_receipt`], which stand alone:
//! a body is stored before it is applied, so a failed apply leaves it for a replay. Status decisions are not made here: the caller reads the locked
//! row with [`lock_booking`], decides with `domain::next_status`, and writes the result.

use anyhow::Context;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use uuid::Uuid;

/// A booking row as one webhook event describes it. `None` means "the event does not say";
/// the upsert keeps the stored value then (an event never writes NULL over a known value).
#[derive(Debug, Default)]
pub struct BookingUpsert<'a> {
    pub cal_uid: &'a str,
    pub trigger: &'a str,
    pub organizer_username: Option<&'a str>,
    pub event_type_id: Option<i32>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub therapist_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub match_id: Option<Uuid>,
    pub booking_kind: Option<&'a str>,
    /// The status decided by the lifecycle table; `None` keeps the stored text.
    pub status: Option<&'a str>,
    pub is_test: bool,
    pub metadata: Option<serde_json::Value>,
    pub video_url: Option<&'a str>,
    pub location: Option<&'a str>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancellation_reason: Option<&'a str>,
    pub request_reschedule: Option<bool>,
    pub rescheduled_from_uid: Option<&'a str>,
    pub rescheduled_to_uid: Option<&'a str>,
    /// When the event happened (envelope `createdAt`), for ordering.
    pub event_at: Option<DateTime<Utc>>,
    pub ical_sequence: Option<i32>,
    /// Calendar UID of the booking's invite (the first booking's uid across reschedules).
    pub ical_uid: Option<&'a str>,
    /// The first attendee as the payload names them (raw; walk-ins have no people row).
    pub attendee_email: Option<&'a str>,
    pub attendee_name: Option<&'a str>,
    pub attendee_phone: Option<&'a str>,
    /// The run's instant: `created_at` of a new row, `updated_at` always.
    pub now: DateTime<Utc>,
}

pub struct Upserted {
    pub id: Uuid,
    pub status: Option<String>,
}

/// Advisory lock namespace of one booking's webhook events (first key of
/// `pg_advisory_xact_lock(int, int)`, the second is `hashtext(cal_uid)`).
const BOOKING_LOCK_NS: i32 = 0x4a43_0010;

/// A booking's lifecycle facts, read under `FOR UPDATE`.
#[derive(Debug, Default)]
pub struct Locked {
    /// No row for this uid yet: the event is the first heard of the booking.
    pub new: bool,
    pub status: Option<String>,
    pub last_event_at: Option<DateTime<Utc>>,
    /// The invite's calendar UID: `ical_uid`, else the booking's own `cal_uid`.
    pub ical_uid: String,
    pub ical_sequence: Option<i32>,
}

/// Locks the booking `cal_uid` until the transaction ends and reads what the lifecycle table
/// decides on, so two events for one booking are decided one after the other, each on the
/// other's result. A uid without a row yet is covered by a transaction-scoped advisory lock on
/// the uid: a second event for the same new booking waits, then finds the first one's row.
pub async fn lock_booking(tx: &Transaction<'_>, cal_uid: &str) -> anyhow::Result<Locked> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&BOOKING_LOCK_NS, &cal_uid],
    )
    .await
    .with_context(|| format!("Failed to take the lock of booking {cal_uid}"))?;
    let row = tx
        .query_opt(
            "SELECT status, last_event_at, coalesce(ical_uid, cal_uid), ical_sequence
             FROM cal_bookings WHERE cal_uid = $1 FOR UPDATE",
            &[&cal_uid],
        )
        .await
        .with_context(|| format!("Failed to lock booking {cal_uid}"))?;
    Ok(match row {
        Some(r) => Locked {
            new: false,
            status: r.try_get(0)?,
            last_event_at: r.try_get(1)?,
            ical_uid: r.try_get(2)?,
            ical_sequence: r.try_get(3)?,
        },
        None => Locked {
            new: true,
            ical_uid: cal_uid.to_string(),
            ..Locked::default()
        },
    })
}

/// Merges one booking by `cal_uid`: every field the event names, and never NULL over a known
/// value. The status is written as given (the caller decided it on the locked row).
pub async fn upsert_booking(
    tx: &Transaction<'_>,
    u: &BookingUpsert<'_>,
) -> anyhow::Result<Upserted> {
    let row = tx
        .query_one(
            "INSERT INTO cal_bookings AS b
               (cal_uid, last_trigger_event, organizer_username, event_type_id, start_time,
                end_time, therapist_id, patient_id, match_id, booking_kind, status, is_test,
                metadata, video_url, location, cancelled_at, cancellation_reason,
                request_reschedule, rescheduled_from_uid, rescheduled_to_uid, created_at,
                updated_at, last_event_at, ical_sequence, ical_uid, attendee_email,
                attendee_name, attendee_phone)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                     coalesce($13, '{}'::jsonb), $14, $15, $16, $17, coalesce($18, false), $19,
                     $20, $21, $21, $22, $23, $24, $25, $26, $27)
             ON CONFLICT (cal_uid) DO UPDATE SET
               last_trigger_event = EXCLUDED.last_trigger_event,
               organizer_username = coalesce(EXCLUDED.organizer_username, b.organizer_username),
               event_type_id = coalesce(EXCLUDED.event_type_id, b.event_type_id),
               start_time = coalesce(EXCLUDED.start_time, b.start_time),
               end_time = coalesce(EXCLUDED.end_time, b.end_time),
               therapist_id = coalesce(EXCLUDED.therapist_id, b.therapist_id),
               patient_id = coalesce(EXCLUDED.patient_id, b.patient_id),
               match_id = coalesce(EXCLUDED.match_id, b.match_id),
               booking_kind = coalesce(EXCLUDED.booking_kind, b.booking_kind),
               status = coalesce(EXCLUDED.status, b.status),
               is_test = coalesce(b.is_test, false) OR EXCLUDED.is_test,
               metadata = coalesce(b.metadata, '{}'::jsonb) || coalesce($13, '{}'::jsonb),
               video_url = coalesce(EXCLUDED.video_url, b.video_url),
               location = coalesce(EXCLUDED.location, b.location),
               cancelled_at = coalesce(EXCLUDED.cancelled_at, b.cancelled_at),
               cancellation_reason = coalesce(EXCLUDED.cancellation_reason, b.cancellation_reason),
               request_reschedule = coalesce($18, b.request_reschedule),
               rescheduled_from_uid = coalesce(EXCLUDED.rescheduled_from_uid, b.rescheduled_from_uid),
               rescheduled_to_uid = coalesce(EXCLUDED.rescheduled_to_uid, b.rescheduled_to_uid),
               updated_at = EXCLUDED.updated_at,
               last_event_at = greatest(b.last_event_at, EXCLUDED.last_event_at),
               ical_sequence = greatest(b.ical_sequence, EXCLUDED.ical_sequence),
               ical_uid = coalesce(EXCLUDED.ical_uid, b.ical_uid),
               attendee_email = coalesce(EXCLUDED.attendee_email, b.attendee_email),
               attendee_name = coalesce(EXCLUDED.attendee_name, b.attendee_name),
               attendee_phone = coalesce(EXCLUDED.attendee_phone, b.attendee_phone)
             RETURNING id, status",
            &[
                &u.cal_uid,
                &u.trigger,
                &u.organizer_username,
                &u.event_type_id,
                &u.start_time,
                &u.end_time,
                &u.therapist_id,
                &u.patient_id,
                &u.match_id,
                &u.booking_kind,
                &u.status,
                &u.is_test,
                &u.metadata,
                &u.video_url,
                &u.location,
                &u.cancelled_at,
                &u.cancellation_reason,
                &u.request_reschedule,
                &u.rescheduled_from_uid,
                &u.rescheduled_to_uid,
                &u.now,
                &u.event_at,
                &u.ical_sequence,
                &u.ical_uid,
                &u.attendee_email,
                &u.attendee_name,
                &u.attendee_phone,
            ],
        )
        .await
        .with_context(|| format!("Failed to store booking {}", u.cal_uid))?;
    Ok(Upserted {
        id: row.try_get(0)?,
        status: row.try_get(1)?,
    })
}

/// What a rescheduled booking carries over to its new uid.
#[derive(Debug, Default)]
pub struct CarriedOver {
    pub patient_id: Option<Uuid>,
    pub therapist_id: Option<Uuid>,
    pub booking_kind: Option<String>,
    pub match_id: Option<Uuid>,
    pub is_test: bool,
}

/// Reads what the old booking knew, for the new uid of a reschedule.
pub async fn carried_over(tx: &Transaction<'_>, old_uid: &str) -> anyhow::Result<CarriedOver> {
    let row = tx
        .query_opt(
            "SELECT patient_id, therapist_id, booking_kind, match_id, coalesce(is_test, false)
             FROM cal_bookings WHERE cal_uid = $1",
            &[&old_uid],
        )
        .await
        .with_context(|| format!("Failed to read rescheduled booking {old_uid}"))?;
    Ok(match row {
        Some(r) => CarriedOver {
            patient_id: r.try_get(0)?,
            therapist_id: r.try_get(1)?,
            booking_kind: r.try_get(2)?,
            match_id: r.try_get(3)?,
            is_test: r.try_get(4)?,
        },
        None => CarriedOver::default(),
    })
}

pub struct TherapistRef {
    pub id: Uuid,
    pub intro_event_type: Option<i32>,
    pub full_event_type: Option<i32>,
}

pub async fn therapist_by_username(
    tx: &Transaction<'_>,
    username: &str,
) -> anyhow::Result<Option<TherapistRef>> {
    therapist_where(tx, "cal_username = $1", &username).await
}

pub async fn therapist_by_id(
    tx: &Transaction<'_>,
    id: Uuid,
) -> anyhow::Result<Option<TherapistRef>> {
    therapist_where(tx, "id = $1", &id).await
}

async fn therapist_where(
    tx: &Transaction<'_>,
    predicate: &str,
    value: &(dyn tokio_postgres::types::ToSql + Sync),
) -> anyhow::Result<Option<TherapistRef>> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT id, cal_intro_event_type_id, cal_full_session_event_type_id
                 FROM therapists WHERE {predicate}"
            ),
            &[value],
        )
        .await
        .context("Failed to look up the therapist")?;
    row.map(|r| {
        Ok(TherapistRef {
            id: r.try_get(0)?,
            intro_event_type: r.try_get(1)?,
            full_event_type: r.try_get(2)?,
        })
    })
    .transpose()
}

pub async fn person_exists(tx: &Transaction<'_>, id: Uuid) -> anyhow::Result<bool> {
    Ok(tx
        .query_opt("SELECT 1 FROM people WHERE id = $1", &[&id])
        .await
        .context("Failed to look up the patient by id")?
        .is_some())
}

/// The newest `people` row with this email address (case-insensitive).
pub async fn person_by_email(tx: &Transaction<'_>, email: &str) -> anyhow::Result<Option<Uuid>> {
    let row = tx
        .query_opt(
            "SELECT id FROM people WHERE lower(email) = lower($1)
             ORDER BY created_at DESC NULLS LAST LIMIT 1",
            &[&email],
        )
        .await
        .context("Failed to look up the patient by email")?;
    row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
}

pub async fn match_exists(tx: &Transaction<'_>, id: Uuid) -> anyhow::Result<bool> {
    Ok(tx
        .query_opt("SELECT 1 FROM matches WHERE id = $1", &[&id])
        .await
        .context("Failed to look up the match")?
        .is_some())
}

/// Advisory lock namespace of one body hash: two deliveries of the same bytes (or a replay
/// racing a redelivery) are applied one after the other, so the second sees the first.
const BODY_LOCK_NS: i32 = 0x4a43_0011;

/// Serializes the application of one body (by its hash) until the transaction ends.
pub async fn lock_body(tx: &Transaction<'_>, body_sha256: &str) -> anyhow::Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&BODY_LOCK_NS, &body_sha256],
    )
    .await
    .context("Failed to take the lock of the webhook body")?;
    Ok(())
}

/// Stores a verified body as a receipt with outcome `received`, committed on its own before
/// the body is applied: if the apply fails, the body is still there for
/// `journeyctl webhook --replay`. No event yet; [`settle_receipt`] writes it with the outcome.
pub async fn open_receipt(
    db: &super::Db,
    trigger: Option<&str>,
    cal_uid: Option<&str>,
    body_sha256: &str,
    body: &str,
    received_at: DateTime<Utc>,
) -> anyhow::Result<Uuid> {
    let client = db.client().await?;
    let row = client
        .query_one(
            "INSERT INTO cal_webhook_receipts
               (received_at, trigger_event, cal_uid, body_sha256, signature_ok, outcome, body)
             VALUES ($1, $2, $3, $4, true, 'received', $5)
             RETURNING id",
            &[&received_at, &trigger, &cal_uid, &body_sha256, &body],
        )
        .await
        .context("Failed to store the webhook receipt")?;
    Ok(row.try_get(0)?)
}

/// What the receipt's body led to, and its `cal_webhook_received` event (no personal data).
/// `applied` and `acknowledged` are never downgraded: replaying an applied receipt leaves it
/// applied.
pub async fn settle_receipt(
    tx: &Transaction<'_>,
    id: Uuid,
    outcome: &str,
    error: Option<&str>,
) -> anyhow::Result<()> {
    tx.execute(
        "WITH rec AS (
           UPDATE cal_webhook_receipts SET outcome = $2, error = $3
           WHERE id = $1 AND outcome NOT IN ('applied', 'acknowledged')
           RETURNING id, trigger_event, cal_uid, body_sha256
         )
         INSERT INTO events (type, level, properties)
         SELECT 'cal_webhook_received', CASE WHEN $3::text IS NULL THEN 'info' ELSE 'warn' END,
                jsonb_build_object('trigger', rec.trigger_event, 'cal_uid', rec.cal_uid,
                                   'outcome', $2::text, 'receipt_id', rec.id,
                                   'body_sha256', rec.body_sha256)
         FROM rec",
        &[&id, &outcome, &error],
    )
    .await
    .with_context(|| format!("Failed to record the outcome of webhook receipt {id}"))?;
    Ok(())
}

/// A stored receipt, for `journeyctl webhook --replay`.
pub struct StoredReceipt {
    pub body_sha256: String,
    pub outcome: String,
    /// `None` once `prune` removed it.
    pub body: Option<String>,
}

pub async fn load_receipt(db: &super::Db, id: Uuid) -> anyhow::Result<Option<StoredReceipt>> {
    let client = db.client().await?;
    let row = client
        .query_opt(
            "SELECT body_sha256, outcome, body FROM cal_webhook_receipts WHERE id = $1",
            &[&id],
        )
        .await
        .with_context(|| format!("Failed to read webhook receipt {id}"))?;
    row.map(|r| {
        Ok(StoredReceipt {
            body_sha256: r.try_get(0)?,
            outcome: r.try_get(1)?,
            body: r.try_get(2)?,
        })
    })
    .transpose()
}

/// Whether these exact bytes were already applied or acknowledged.
pub async fn already_received(tx: &Transaction<'_>, body_sha256: &str) -> anyhow::Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM cal_webhook_receipts
             WHERE body_sha256 = $1 AND outcome IN ('applied', 'acknowledged') LIMIT 1",
            &[&body_sha256],
        )
        .await
        .context("Failed to check webhook receipts")?
        .is_some())
}

pub struct Receipt<'a> {
    pub trigger: Option<&'a str>,
    pub cal_uid: Option<&'a str>,
    pub body_sha256: &'a str,
    pub outcome: &'a str,
    pub error: Option<&'a str>,
    pub body: Option<&'a str>,
    pub received_at: DateTime<Utc>,
}

/// Records a received body and its `cal_webhook_received` event (no personal data).
pub async fn record_receipt(tx: &Transaction<'_>, r: &Receipt<'_>) -> anyhow::Result<Uuid> {
    let row = tx
        .query_one(
            "WITH rec AS (
               INSERT INTO cal_webhook_receipts
                 (received_at, trigger_event, cal_uid, body_sha256, signature_ok, outcome, error, body)
               VALUES ($1, $2, $3, $4, true, $5, $6, $7)
               RETURNING id
             ), ev AS (
               INSERT INTO events (type, level, properties)
               SELECT 'cal_webhook_received', CASE WHEN $6::text IS NULL THEN 'info' ELSE 'warn' END,
                      jsonb_build_object('trigger', $2::text, 'cal_uid', $3::text,
                                         'outcome', $5::text, 'receipt_id', rec.id,
                                         'body_sha256', $4::text)
               FROM rec
               RETURNING 1
             )
             SELECT id FROM rec",
            &[
                &r.received_at,
                &r.trigger,
                &r.cal_uid,
                &r.body_sha256,
                &r.outcome,
                &r.error,
                &r.body,
            ],
        )
        .await
        .context("Failed to record the webhook receipt")?;
    Ok(row.try_get(0)?)
}
