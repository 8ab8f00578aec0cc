//! SQL of webhook ingestion: receipts, resolution of therapist and patient, the locked read of
//! a booking's lifecycle facts and the upsert of `cal_bookings`. Everything here runs inside
//! the caller's transaction, except [`open_receipt_unless_seen`] and [`load_receipt`], which
//! stand alone: a body is stored before it is applied, so a failed
//! apply leaves it for a replay; and [`owed_after_commit`], `serve`'s start-up read of what it
//! still owes. Status decisions are not made here: the caller reads the locked row with
//! [`lock_booking`] (or [`lock_and_resolve`], the webhook's one-round-trip form), decides with
//! `domain::next_status`, and writes the result.

use anyhow::Context;
use chrono::{DateTime, Utc};
use deadpool_postgres::ClientWrapper;
use uuid::Uuid;

use crate::domain::{
    BookingStatus, EventKind, EventLevel, LedgerStage, UnknownStatus, WebhookOutcome,
};

/// A booking row as one webhook event describes it. `None` means "the event does not say";
/// the upsert keeps the stored value then (an event never writes NULL over a known value).
#[derive(Debug, Default)]
pub(crate) struct BookingUpsert<'a> {
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

pub(crate) struct Upserted {
    pub id: Uuid,
    pub status: Option<String>,
}

/// Advisory lock namespace of one booking's webhook events (first key of
/// `pg_advisory_xact_lock(int, int)`, the second is `hashtext(cal_uid)`).
const BOOKING_LOCK_NS: i32 = 0x4a43_0010;

/// A booking's lifecycle facts, read under `FOR UPDATE`.
#[derive(Debug, Default)]
pub(crate) struct Locked {
    /// No row for this uid yet: the event is the first heard of the booking.
    pub new: bool,
    /// `None`: NULL (pre-inserted by the booking site). Text this program does not know is
    /// kept as the error, for the caller to log and decide on.
    pub status: Option<Result<BookingStatus, UnknownStatus>>,
    pub last_event_at: Option<DateTime<Utc>>,
    /// The invite's calendar UID: `ical_uid`, else the booking's own `cal_uid`.
    pub ical_uid: String,
    pub ical_sequence: Option<i32>,
}

impl Locked {
    /// No row for `cal_uid` yet: its invite will carry the booking's own uid.
    fn first_of(cal_uid: &str) -> Locked {
        Locked {
            new: true,
            ical_uid: cal_uid.to_string(),
            ..Locked::default()
        }
    }
}

/// `cal_bookings.status` as read (see [`Locked::status`]).
fn read_status(text: Option<String>) -> Option<Result<BookingStatus, UnknownStatus>> {
    text.map(|t| BookingStatus::parse(&t))
}

/// Locks the booking `cal_uid` until the transaction ends and reads what the lifecycle table
/// decides on, so two events for one booking are decided one after the other, each on the
/// other's result. A uid without a row yet is covered by a transaction-scoped advisory lock on
/// the uid: a second event for the same new booking waits, then finds the first one's row.
pub(crate) async fn lock_booking(tx: &ClientWrapper, cal_uid: &str) -> anyhow::Result<Locked> {
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
            status: read_status(r.try_get(0)?),
            last_event_at: r.try_get(1)?,
            ical_uid: r.try_get(2)?,
            ical_sequence: r.try_get(3)?,
        },
        None => Locked::first_of(cal_uid),
    })
}

/// The upsert of [`upsert_booking`], `$1..$27` as it binds them.
const UPSERT_SQL: &str = "INSERT INTO cal_bookings AS b
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
             RETURNING id, status";

/// Merges one booking by `cal_uid`: every field the event names, and never NULL over a known
/// value. The status is written as given (the caller decided it on the locked row).
pub(crate) async fn upsert_booking(
    tx: &ClientWrapper,
    u: &BookingUpsert<'_>,
) -> anyhow::Result<Upserted> {
    let stmt = tx
        .prepare_cached(UPSERT_SQL)
        .await
        .context("Failed to prepare the booking upsert")?;
    let row = tx
        .query_one(&stmt, &upsert_params(u))
        .await
        .with_context(|| format!("Failed to store booking {}", u.cal_uid))?;
    Ok(Upserted {
        id: row.try_get(0)?,
        status: row.try_get(1)?,
    })
}

type Param<'p> = &'p (dyn tokio_postgres::types::ToSql + Sync);

/// `$1..$27` of [`UPSERT_SQL`].
fn upsert_params<'p>(u: &'p BookingUpsert<'_>) -> Vec<Param<'p>> {
    vec![
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
    ]
}

/// The write of [`upsert_settle_and_commit`]: the booking, and the receipt settled `applied`
/// with its event.
static UPSERT_AND_SETTLE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH up AS ({UPSERT_SQL}),
     rec AS (
       UPDATE cal_webhook_receipts SET outcome = '{applied}', error = NULL
       WHERE id = $28 AND outcome NOT IN {settled}
       RETURNING id, trigger_event, cal_uid, body_sha256
     ), ev AS (
       INSERT INTO events (type, level, properties)
       SELECT '{kind}', '{level}',
              jsonb_build_object('trigger', rec.trigger_event, 'cal_uid', rec.cal_uid,
                                 'outcome', '{applied}', 'receipt_id', rec.id,
                                 'body_sha256', rec.body_sha256)
       FROM rec
       RETURNING 1
     )
     SELECT id, status FROM up",
        applied = WebhookOutcome::Applied,
        settled = WebhookOutcome::sql_final(),
        kind = RECEIPT_EVENT,
        level = RECEIPT_EVENT.level(),
    )
});

/// [`upsert_booking`] and [`settle_receipt`] as `applied` in one statement, the webhook's last
/// write, sent with the transaction's COMMIT in one round trip. A failed write leaves the
/// transaction aborted, and the COMMIT behind it then ends it as a rollback.
pub(crate) async fn upsert_settle_and_commit(
    mut tx: ApplyTx,
    u: &BookingUpsert<'_>,
    receipt: Uuid,
) -> anyhow::Result<Upserted> {
    let conn = tx.conn()?;
    let stmt = conn
        .prepare_cached(&UPSERT_AND_SETTLE_SQL)
        .await
        .context("Failed to prepare the booking upsert")?;
    let mut params = upsert_params(u);
    params.push(&receipt);
    // Both go out before either answer is awaited; the server runs them in order.
    let (row, committed) =
        futures::future::join(conn.query_one(&stmt, &params), conn.batch_execute("COMMIT")).await;
    let row = row.with_context(|| format!("Failed to store booking {}", u.cal_uid));
    let committed = committed.context("Failed to commit the webhook's changes");
    if committed.is_ok() {
        // Committed, or (after a failed write) rolled back: out of the transaction.
        tx.held.release();
    }
    let row = row?;
    committed?;
    Ok(Upserted {
        id: row.try_get(0)?,
        status: row.try_get(1)?,
    })
}

/// What a rescheduled booking carries over to its new uid.
#[derive(Debug, Default)]
pub(crate) struct CarriedOver {
    pub patient_id: Option<Uuid>,
    pub therapist_id: Option<Uuid>,
    pub booking_kind: Option<String>,
    pub match_id: Option<Uuid>,
    pub is_test: bool,
}

/// Reads what the old booking knew, for the new uid of a reschedule.
pub(crate) async fn carried_over(tx: &ClientWrapper, old_uid: &str) -> anyhow::Result<CarriedOver> {
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

pub(crate) struct TherapistRef {
    pub id: Uuid,
    pub intro_event_type: Option<i32>,
    pub full_event_type: Option<i32>,
}

/// Advisory lock namespace of one body hash (taken by [`lock_and_resolve`]): two deliveries of
/// the same bytes (or a replay racing a redelivery) are applied one after the other, so the
/// second sees the first.
const BODY_LOCK_NS: i32 = 0x4a43_0011;

/// The event every settled receipt writes.
const RECEIPT_EVENT: EventKind = EventKind::CalWebhookReceived;

/// SQL: the level of a receipt's event, a warning when the receipt records an error (the
/// text parameter `error_param`).
fn receipt_event_level(error_param: &str) -> String {
    format!(
        "CASE WHEN {error_param}::text IS NULL THEN '{}' ELSE '{}' END",
        RECEIPT_EVENT.level(),
        EventLevel::Warn
    )
}

/// What the receipt's body led to, and its `cal_webhook_received` event (no personal data).
/// `applied` and `acknowledged` are never downgraded: replaying an applied receipt leaves it
/// applied.
pub(crate) async fn settle_receipt(
    tx: &ClientWrapper,
    id: Uuid,
    outcome: WebhookOutcome,
    error: Option<&str>,
) -> anyhow::Result<()> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH rec AS (
           UPDATE cal_webhook_receipts SET outcome = $2, error = $3
           WHERE id = $1 AND outcome NOT IN {settled}
           RETURNING id, trigger_event, cal_uid, body_sha256
         )
         INSERT INTO events (type, level, properties)
         SELECT '{kind}', {level},
                jsonb_build_object('trigger', rec.trigger_event, 'cal_uid', rec.cal_uid,
                                   'outcome', $2::text, 'receipt_id', rec.id,
                                   'body_sha256', rec.body_sha256)
         FROM rec",
            settled = WebhookOutcome::sql_final(),
            kind = RECEIPT_EVENT,
            level = receipt_event_level("$3"),
        )
    });
    let stmt = tx
        .prepare_cached(&SQL)
        .await
        .context("Failed to prepare the receipt's outcome")?;
    tx.execute(&stmt, &[&id, &outcome.as_str(), &error])
        .await
        .with_context(|| format!("Failed to record the outcome of webhook receipt {id}"))?;
    Ok(())
}

/// A stored receipt, for `journeyctl webhook --replay`.
pub(crate) struct StoredReceipt {
    pub body_sha256: String,
    pub outcome: String,
    /// `None` once `prune` removed it.
    pub body: Option<String>,
}

pub(crate) async fn load_receipt(
    db: &super::Db,
    id: Uuid,
) -> anyhow::Result<Option<StoredReceipt>> {
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

pub(crate) struct Receipt<'a> {
    pub trigger: Option<&'a str>,
    pub cal_uid: Option<&'a str>,
    pub body_sha256: &'a str,
    pub outcome: WebhookOutcome,
    pub error: Option<&'a str>,
    pub body: Option<&'a str>,
    pub received_at: DateTime<Utc>,
}

/// Records a received body and its `cal_webhook_received` event (no personal data).
pub(crate) async fn record_receipt(tx: &ClientWrapper, r: &Receipt<'_>) -> anyhow::Result<Uuid> {
    let sql = format!(
        "WITH rec AS (
               INSERT INTO cal_webhook_receipts
                 (received_at, trigger_event, cal_uid, body_sha256, signature_ok, outcome, error, body)
               VALUES ($1, $2, $3, $4, true, $5, $6, $7)
               RETURNING id
             ), ev AS (
               INSERT INTO events (type, level, properties)
               SELECT '{kind}', {level},
                      jsonb_build_object('trigger', $2::text, 'cal_uid', $3::text,
                                         'outcome', $5::text, 'receipt_id', rec.id,
                                         'body_sha256', $4::text)
               FROM rec
               RETURNING 1
             )
             SELECT id FROM rec",
        kind = RECEIPT_EVENT,
        level = receipt_event_level("$6"),
    );
    let row = tx
        .query_one(
            &sql,
            &[
                &r.received_at,
                &r.trigger,
                &r.cal_uid,
                &r.body_sha256,
                &r.outcome.as_str(),
                &r.error,
                &r.body,
            ],
        )
        .await
        .context("Failed to record the webhook receipt")?;
    Ok(row.try_get(0)?)
}

// ---- the fast path of one webhook: few prepared statements ---------------------------------
//
// `journeyctl serve` takes many bodies a second; each statement below is prepared once per
// connection (`prepare_cached`). Per BOOKING_CREATED, six statements in two round trips: the
// receipt (autocommitted), BEGIN, the locks and one read of everything the apply decides on;
// then one write of the booking with the receipt's outcome, and COMMIT.

/// The transaction of one webhook's apply, begun and ended by hand so that its BEGIN and its
/// COMMIT share a round trip with the statements next to them ([`open_receipt_and_begin`],
/// [`upsert_settle_and_commit`]): a webhook is mostly round trips. Dropped while still open (a
/// step failed and returned early, or a panic unwound through it; a client hanging up cannot
/// cancel an apply, which runs in a task of its own), it takes its connection out of the pool
/// and closes it: PostgreSQL rolls the transaction back, and no pooled connection is ever left
/// inside a transaction.
pub(crate) struct ApplyTx {
    held: super::pool::Held,
}

impl ApplyTx {
    /// A pooled connection, held from before anything is sent on it: dropped at any point
    /// before it is released, the connection is closed, so a BEGIN already sent can never
    /// leave it in the pool inside a transaction.
    async fn take(db: &super::Db) -> anyhow::Result<ApplyTx> {
        Ok(ApplyTx {
            held: super::pool::Held::take(db).await?,
        })
    }

    /// The connection the transaction runs on.
    pub(crate) fn conn(&self) -> anyhow::Result<&ClientWrapper> {
        self.held.conn()
    }

    pub(crate) async fn commit(mut self) -> anyhow::Result<()> {
        self.conn()?
            .batch_execute("COMMIT")
            .await
            .context("Failed to commit the webhook's changes")?;
        self.held.release();
        Ok(())
    }

    /// Ends the transaction without its changes (nothing was written in it).
    pub(crate) async fn rollback(mut self) {
        if let Ok(conn) = self.conn() {
            if conn.batch_execute("ROLLBACK").await.is_ok() {
                self.held.release();
            }
        }
    }
}

/// What [`open_receipt_and_begin`] got back: the receipt (`None`: these bytes were applied or
/// acknowledged before, nothing stored) and the open transaction with what it read.
pub(crate) struct Opened {
    pub receipt: anyhow::Result<Option<Uuid>>,
    pub applying: anyhow::Result<(ApplyTx, Resolved)>,
}

/// A verified body to store as a receipt.
pub(crate) struct NewReceipt<'a> {
    pub trigger: Option<&'a str>,
    pub cal_uid: Option<&'a str>,
    pub body_sha256: &'a str,
    pub body: &'a str,
    pub received_at: DateTime<Utc>,
}

/// The receipt of [`open_receipt_and_begin`]: stored unless the same bytes were applied or
/// acknowledged.
static RECEIPT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO cal_webhook_receipts
           (received_at, trigger_event, cal_uid, body_sha256, signature_ok, outcome, body)
         SELECT $1, $2, $3, $4, true, '{received}', $5
         WHERE NOT EXISTS (SELECT 1 FROM cal_webhook_receipts
                           WHERE body_sha256 = $4 AND outcome IN {settled})
         RETURNING id",
        received = WebhookOutcome::Received,
        settled = WebhookOutcome::sql_final(),
    )
});

/// Stores a verified body as a `received` receipt, committed on its own, unless the same bytes
/// were already applied or acknowledged (one statement for the check and the insert); then
/// begins the apply's transaction and takes its locks and reads ([`lock_and_resolve`]). Four
/// statements, one round trip: the receipt commits before the BEGIN, so a failed apply keeps
/// it. A caller that finds no receipt rolls the transaction back.
pub(crate) async fn open_receipt_and_begin(
    db: &super::Db,
    r: &NewReceipt<'_>,
    q: &Lookup<'_>,
) -> Opened {
    let tx = match ApplyTx::take(db).await {
        Ok(tx) => tx,
        Err(e) => {
            return Opened {
                receipt: Err(e),
                applying: Err(anyhow::anyhow!("no connection")),
            }
        }
    };
    let (receipt, resolved) = {
        let Ok(conn) = tx.conn() else {
            return Opened {
                receipt: Err(anyhow::anyhow!("no connection")),
                applying: Err(anyhow::anyhow!("no connection")),
            };
        };
        // Prepared before anything is sent (a round trip only on a connection's first
        // webhook), so the receipt leaves before the BEGIN.
        let stmt = match conn.prepare_cached(&RECEIPT_SQL).await {
            Ok(s) => s,
            Err(e) => {
                let e = anyhow::Error::new(e).context("Failed to prepare the webhook receipt");
                return Opened {
                    receipt: Err(e),
                    applying: Err(anyhow::anyhow!("no receipt")),
                };
            }
        };
        let params: [Param<'_>; 5] = [
            &r.received_at,
            &r.trigger,
            &r.cal_uid,
            &r.body_sha256,
            &r.body,
        ];
        let receipt = async {
            conn.query_opt(&stmt, &params)
                .await
                .context("Failed to store the webhook receipt")?
                .map(|row| row.try_get(0))
                .transpose()
                .map_err(anyhow::Error::from)
        };
        futures::future::join(receipt, begin_on(conn, q)).await
    };
    Opened {
        receipt,
        applying: in_transaction(tx, resolved),
    }
}

/// Begins an apply's transaction and takes its locks and reads, in one round trip: for a
/// receipt stored before (`journeyctl webhook --replay`).
pub(crate) async fn begin_and_resolve(
    db: &super::Db,
    q: &Lookup<'_>,
) -> anyhow::Result<(ApplyTx, Resolved)> {
    let tx = ApplyTx::take(db).await?;
    let resolved = begin_on(tx.conn()?, q).await;
    in_transaction(tx, resolved)
}

/// `tx` once [`begin_on`] ran on it. When that failed, the transaction may be open or
/// aborted: `tx` is dropped, so its connection is closed, never pooled.
fn in_transaction(
    tx: ApplyTx,
    resolved: anyhow::Result<Resolved>,
) -> anyhow::Result<(ApplyTx, Resolved)> {
    match resolved {
        Ok(resolved) => Ok((tx, resolved)),
        Err(e) => {
            drop(tx);
            Err(e)
        }
    }
}

/// BEGIN, then [`lock_and_resolve`], sent together.
async fn begin_on(client: &ClientWrapper, q: &Lookup<'_>) -> anyhow::Result<Resolved> {
    let (begun, resolved) = futures::future::join(
        async {
            client
                .batch_execute("BEGIN")
                .await
                .context("Failed to begin the webhook's transaction")
        },
        lock_and_resolve(client, q),
    )
    .await;
    begun?;
    resolved
}

/// Opens `n` connections of `serve`'s ingest pool and prepares a webhook's statements on each,
/// before the first webhook is taken: the first burst after a start finds the pool as a
/// listener that has run for a while has it, instead of waiting for each connection to open
/// and prepare (figures in `bench/RESULTS.md`).
pub(crate) async fn warm_ingest(db: &super::Db, n: usize) -> anyhow::Result<()> {
    let clients = futures::future::try_join_all((0..n).map(|_| db.client())).await?;
    futures::future::try_join_all(clients.iter().map(|c| async move {
        for sql in [
            RECEIPT_SQL.as_str(),
            LOCKS_SQL,
            READ.as_str(),
            UPSERT_AND_SETTLE_SQL.as_str(),
        ] {
            c.prepare_cached(sql).await?;
        }
        anyhow::Ok(())
    }))
    .await
    .context("Failed to prepare the webhook statements")?;
    Ok(())
}

/// What an event names, to be resolved in one read.
#[derive(Debug, Default)]
pub(crate) struct Lookup<'a> {
    pub body_sha256: &'a str,
    pub organizer_username: Option<&'a str>,
    pub therapist_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    /// The attendee's email, trimmed.
    pub patient_email: Option<&'a str>,
    pub match_id: Option<Uuid>,
    /// The booking to lock and read (`None`: lock nothing, e.g. a PING, or a reschedule whose
    /// old uid must be locked first).
    pub cal_uid: Option<&'a str>,
}

/// Everything the apply decides on, read after the locks were taken.
pub(crate) struct Resolved {
    /// These bytes were applied or acknowledged by another receipt meanwhile.
    pub duplicate: bool,
    /// Organizer username, else the booking link's therapist id.
    pub therapist: Option<TherapistRef>,
    /// `kh_patient_id` was given but names no person.
    pub patient_id_unknown: bool,
    /// `kh_patient_id` when that person exists, else the newest person with the email.
    pub patient_id: Option<Uuid>,
    /// `kh_match_id` when that match exists.
    pub match_id: Option<Uuid>,
    /// The booking's lifecycle facts under `FOR UPDATE` (when `cal_uid` was given).
    pub locked: Option<Locked>,
}

/// The locks of [`lock_and_resolve`]: the body's, then (with `$4`) the booking's.
const LOCKS_SQL: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2)),
                    CASE WHEN $4::text IS NOT NULL
                         THEN pg_advisory_xact_lock($3, hashtext($4)) END";

/// The read of [`lock_and_resolve`].
static READ: std::sync::LazyLock<String> = std::sync::LazyLock::new(resolve_sql);

/// The read of [`lock_and_resolve`], `$1..$7` as [`Lookup`] binds them. Answers (duplicate,
/// therapist id, intro type, full type, patient id unknown, patient, match, booking exists,
/// status, last_event_at, ical_uid, ical_sequence).
fn resolve_sql() -> String {
    format!(
        "WITH locked AS (
               SELECT status, last_event_at, coalesce(ical_uid, cal_uid) AS ical_uid, ical_sequence
               FROM cal_bookings WHERE cal_uid = $7 FOR UPDATE
             ), th AS (
               SELECT id, intro, full_session FROM (
                 SELECT 0 AS prio, id, cal_intro_event_type_id AS intro,
                        cal_full_session_event_type_id AS full_session
                 FROM therapists WHERE cal_username = $2
                 UNION ALL
                 SELECT 1, id, cal_intro_event_type_id, cal_full_session_event_type_id
                 FROM therapists WHERE id = $3
               ) t ORDER BY prio LIMIT 1
             )
             SELECT
               EXISTS (SELECT 1 FROM cal_webhook_receipts
                       WHERE body_sha256 = $1 AND outcome IN {settled}),
               th.id, th.intro, th.full_session,
               $4::uuid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM people WHERE id = $4),
               coalesce((SELECT id FROM people WHERE id = $4),
                        (SELECT id FROM people WHERE lower(email) = lower($5)
                         ORDER BY created_at DESC NULLS LAST LIMIT 1)),
               (SELECT id FROM matches WHERE id = $6),
               locked.ical_uid IS NOT NULL, locked.status, locked.last_event_at,
               locked.ical_uid, locked.ical_sequence
             FROM (SELECT 1) one
             LEFT JOIN th ON true
             LEFT JOIN locked ON true",
        settled = WebhookOutcome::sql_final(),
    )
}

/// Takes the body's lock and (with `cal_uid`) the booking's, then reads the duplicate check,
/// therapist, patient, match and the locked booking: two prepared statements sent in one round
/// trip. The read is a statement of its own after the locks, so its snapshot sees what the
/// previous holder of a lock committed (a second event for the same new booking finds the
/// first one's row). Lock order: the body's, then the
/// booking's (as [`lock_booking`] takes it).
async fn lock_and_resolve(tx: &ClientWrapper, q: &Lookup<'_>) -> anyhow::Result<Resolved> {
    let locks = tx
        .prepare_cached(LOCKS_SQL)
        .await
        .context("Failed to prepare the webhook locks")?;
    let read = tx
        .prepare_cached(&READ)
        .await
        .context("Failed to prepare the webhook lookups")?;
    let lock_params: [Param<'_>; 4] = [&BODY_LOCK_NS, &q.body_sha256, &BOOKING_LOCK_NS, &q.cal_uid];
    let read_params: [Param<'_>; 7] = [
        &q.body_sha256,
        &q.organizer_username,
        &q.therapist_id,
        &q.patient_id,
        &q.patient_email,
        &q.match_id,
        &q.cal_uid,
    ];
    // Both go out before either answer is awaited; the server runs them in order.
    let (locked, row) = futures::future::join(
        tx.query_one(&locks, &lock_params),
        tx.query_one(&read, &read_params),
    )
    .await;
    locked.context("Failed to take the locks of the webhook")?;
    let r = row.context("Failed to read what the webhook names")?;
    resolved_of(&r, q.cal_uid)
}

/// The answer row of [`resolve_sql`], read.
fn resolved_of(r: &tokio_postgres::Row, cal_uid: Option<&str>) -> anyhow::Result<Resolved> {
    let therapist = r
        .try_get::<_, Option<Uuid>>(1)?
        .map(|id| -> anyhow::Result<TherapistRef> {
            Ok(TherapistRef {
                id,
                intro_event_type: r.try_get(2)?,
                full_event_type: r.try_get(3)?,
            })
        })
        .transpose()?;
    let locked = match cal_uid {
        None => None,
        Some(uid) if !r.try_get::<_, bool>(7)? => Some(Locked::first_of(uid)),
        Some(_) => Some(Locked {
            new: false,
            status: read_status(r.try_get(8)?),
            last_event_at: r.try_get(9)?,
            ical_uid: r.try_get(10)?,
            ical_sequence: r.try_get(11)?,
        }),
    };
    Ok(Resolved {
        duplicate: r.try_get(0)?,
        therapist,
        patient_id_unknown: r.try_get(4)?,
        patient_id: r.try_get(5)?,
        match_id: r.try_get(6)?,
        locked,
    })
}

/// What `serve` owes, read when it starts: bookings a webhook booked within `since` (their
/// `updated_at`) that are active, ahead and still miss a confirmation (`true`), and bookings
/// cancelled since then whose patient holds an invite and has no cancellation notice row
/// (`false`). The committed bookings are the queue: what a stopped or killed `serve` left is
/// picked up here by the next one (and after 10 minutes by `confirmation-recovery`); the
/// delivery ledger keeps every message to one send however many ask.
pub(crate) async fn owed_after_commit(
    db: &super::Db,
    now: DateTime<Utc>,
    since: DateTime<Utc>,
) -> anyhow::Result<Vec<(Uuid, bool)>> {
    use crate::domain::Stage;
    let sql = format!(
        "SELECT b.id, true FROM cal_bookings b
         WHERE (b.client_confirmation_sent_at IS NULL OR b.therapist_notification_sent_at IS NULL)
           AND b.start_time > $1 AND b.updated_at >= $2
           AND b.last_trigger_event IN ('BOOKING_CREATED', 'BOOKING_RESCHEDULED')
           AND {active} AND {work}
         UNION ALL
         SELECT b.id, false FROM cal_bookings b
         WHERE b.cancelled_at IS NOT NULL AND b.cancelled_at >= $2 AND {cancelled}
           AND b.client_confirmation_sent_at IS NOT NULL AND NOT coalesce(b.is_test, false)
           AND NOT EXISTS (SELECT 1 FROM journey_deliveries d
                           WHERE d.booking_id = b.id AND d.stage = '{notice}')",
        active = BookingStatus::sql_is_active("b"),
        work = super::bookings::has_work(Stage::ConfirmationRecovery),
        cancelled = BookingStatus::Cancelled.sql_is("b"),
        notice = LedgerStage::CancellationNotice,
    );
    let client = db.client().await?;
    let rows = client
        .query(&sql, &[&now, &since])
        .await
        .context("Failed to read the confirmations still owed")?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}
