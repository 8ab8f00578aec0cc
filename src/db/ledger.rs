//! The delivery ledger, `journey_deliveries`: exactly once, or visibly in doubt (docs/ARCHITECTURE.md,
//! "The path of a stage run").
//!
//! Guarantees:
//! - A message is handed to a provider only after its row is committed in `sending` under the
//!   unique key (booking, stage, channel, recipient role). A second claim of the same key
//!   fails, whatever process, host or timer makes it, so overlapping runs cannot double-send.
//!   The advisory stage lock only saves work; correctness does not depend on it.
//! - The outcome (`sent`, `retry`, `failed`, `skipped`, `in_doubt`), the booking's stage column
//!   (on the first `sent`) and the `email_sent`/`sms_sent`/`error` event are written in one
//!   statement, so they commit together.
//! - Only `retry` rows are claimed again, each channel on its own: a failed email never
//!   resends the SMS that went out.
//! - A row is stamped `send_started_at` (committed) before its message is handed to a
//!   provider: a one-at-a-time claim ([`claim`]) at claim time, a batch claim ([`claim_batch`])
//!   right before each send ([`StampSession::stamp`]; sends starting together share one
//!   statement). A batch is claimed ahead of its sends, so an unstamped `sending` row is one
//!   no provider has seen.
//! - A row left in `sending` is never resent automatically. When its lease has passed or no
//!   connection of the process that claimed it is left (each process names its connections
//!   `journeyctl:<id>`, visible in `pg_stat_activity`), it becomes `in_doubt` if stamped, and
//!   is given back (due again) if not.
//!
//! Residual risk: a provider accepts a message and the process dies (or loses the database)
//! before the outcome is recorded. The row then ends `in_doubt`, is raised by `status` and
//! settled by `journeyctl resolve`; the message is never silently sent twice, but it may need a
//! human to decide.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::Db;
use crate::domain::{Channel, DeliveryStatus, EventKind, EventLevel, LedgerStage, RecipientRole};

/// A claim's lease, in minutes: how long a row may stay in `sending` before another run may
/// declare it in doubt, even if the claiming run still looks alive. Far above one send (SMTP and
/// Twilio answer within their timeouts, seconds), so only a stuck run ever reaches it.
const CLAIM_LEASE_MINUTES: u32 = 15;

/// The unique key of one message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub booking_id: Uuid,
    pub stage: LedgerStage,
    pub channel: Channel,
    pub role: RecipientRole,
}

#[derive(Clone, Debug)]
pub struct LedgerRow {
    pub id: Uuid,
    pub status: DeliveryStatus,
    pub attempts: i32,
}

/// Existing rows for these bookings in one ledger stage, keyed by (booking, channel, role).
pub async fn load(
    db: &Db,
    booking_ids: &[Uuid],
    stage: &str,
) -> anyhow::Result<HashMap<(Uuid, Channel, RecipientRole), LedgerRow>> {
    if booking_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT id, booking_id, channel, recipient_role, status, attempts
             FROM journey_deliveries WHERE booking_id = ANY($1) AND stage = $2",
            &[&booking_ids, &stage],
        )
        .await
        .with_context(|| format!("Failed to load the {stage} ledger"))?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let channel: String = r.try_get(2)?;
        let role: String = r.try_get(3)?;
        let status: String = r.try_get(4)?;
        let (Some(channel), Some(role), Some(status)) = (
            Channel::parse(&channel),
            RecipientRole::parse(&role),
            DeliveryStatus::parse(&status),
        ) else {
            anyhow::bail!("journey_deliveries holds an unknown channel/role/status: {channel}/{role}/{status}");
        };
        out.insert(
            (r.try_get(1)?, channel, role),
            LedgerRow {
                id: r.try_get(0)?,
                status,
                attempts: r.try_get(5)?,
            },
        );
    }
    Ok(out)
}

/// Result of trying to claim a message.
#[derive(Clone, Debug)]
pub enum Claim {
    /// This run owns the message now and must record an outcome.
    Claimed {
        id: Uuid,
        message_id: String,
        attempt: i32,
    },
    /// Another run (or an earlier one) has it, in this state.
    Taken(DeliveryStatus),
    /// Patient-exclusive stages: this patient already has such a message (sent recently,
    /// being sent, or in doubt) for another booking.
    PatientTaken,
    /// The claim required an active booking, and the booking is no longer active (cancelled
    /// between selection and claim): nothing claimed.
    Inactive,
}

pub struct ClaimRequest<'a> {
    pub key: &'a DeliveryKey,
    pub patient_id: Option<Uuid>,
    pub run_id: Uuid,
    /// The claiming process's connection name (see [`process_application_name`]).
    pub claimed_by: &'a str,
    pub recipient_masked: &'a str,
    /// Domain for the Message-ID (`<delivery id>@domain`).
    pub message_id_domain: &'a str,
    /// Patient-exclusive stages (cancellation recovery): refuse the claim when the patient
    /// got this stage's message for another booking after this instant, or has one in flight.
    pub patient_exclusive_since: Option<DateTime<Utc>>,
    /// Claim only while the booking is active (ACCEPTED or NULL), judged in the claim
    /// statement itself: a booking cancelled after the run selected it gets no confirmation.
    pub require_active: bool,
}

/// Advisory lock namespace serialising patient-exclusive claims.
const PATIENT_LOCK_NS: i32 = 0x4a43_0002;

type Param<'p> = &'p (dyn tokio_postgres::types::ToSql + Sync);

/// Commits the row in `sending` (new, or a `retry` row taken again), stamped as being sent:
/// the caller hands it to the provider right after. One statement.
pub async fn claim(db: &Db, req: &ClaimRequest<'_>) -> anyhow::Result<Claim> {
    let id = Uuid::new_v4();
    let message_id = format!("<{}@{}>", id, req.message_id_domain);
    let channel = req.key.channel.as_str();
    let role = req.key.role.as_str();
    let params: [Param<'_>; 11] = [
        &id,
        &req.key.booking_id,
        &req.patient_id,
        &req.key.stage.as_str(),
        &channel,
        &role,
        &req.run_id,
        &req.recipient_masked,
        &message_id,
        &req.claimed_by,
        &req.require_active,
    ];
    let context = || {
        format!(
            "Failed to claim the {} {} {} delivery of booking {}",
            req.key.stage, req.key.role, req.key.channel, req.key.booking_id
        )
    };
    let mut client = db.client().await?;
    let rows = match (req.patient_exclusive_since, req.patient_id) {
        (Some(since), Some(patient)) => {
            let tx = client.transaction().await.with_context(context)?;
            if patient_has_other(&tx, req.key, patient, since).await? {
                return Ok(Claim::PatientTaken);
            }
            let rows = tx
                .query(&claim_sql(), &params)
                .await
                .with_context(context)?;
            tx.commit().await.with_context(context)?;
            rows
        }
        // One statement: the claim commits on its own.
        _ => client
            .query(&claim_sql(), &params)
            .await
            .with_context(context)?,
    };
    claim_of(rows.first(), message_id)
}

/// Patient-exclusive stages: whether this patient got this stage's message for another booking
/// after `since`, or has one in flight or in doubt. Takes the patient's lock first (until the
/// transaction ends): two runs, or two cancellations of one patient, must not both pass.
async fn patient_has_other(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &DeliveryKey,
    patient: Uuid,
    since: DateTime<Utc>,
) -> anyhow::Result<bool> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&PATIENT_LOCK_NS, &patient.to_string()],
    )
    .await
    .context("Failed to take the patient lock")?;
    let other = tx
        .query_opt(
            "SELECT 1 FROM journey_deliveries
             WHERE patient_id = $1 AND stage = $2 AND booking_id <> $3
               AND (status IN ('sending', 'in_doubt') OR (status = 'sent' AND sent_at > $4))
             LIMIT 1",
            &[&patient, &key.stage.as_str(), &key.booking_id, &since],
        )
        .await
        .context("Failed to check the patient's earlier messages")?;
    Ok(other.is_some())
}

/// The answer row of [`claim_sql`], read.
fn claim_of(row: Option<&tokio_postgres::Row>, message_id: String) -> anyhow::Result<Claim> {
    let Some(row) = row else {
        // The conflicting row was committed after this statement's snapshot: another run
        // claimed it a moment ago.
        return Ok(Claim::Taken(DeliveryStatus::Sending));
    };
    let claimed: bool = row.try_get(4)?;
    let status: String = row.try_get(3)?;
    if !claimed && status == "inactive" {
        return Ok(Claim::Inactive);
    }
    if claimed {
        Ok(Claim::Claimed {
            id: row.try_get(0)?,
            message_id: row.try_get::<_, Option<String>>(1)?.unwrap_or(message_id),
            attempt: row.try_get(2)?,
        })
    } else {
        Ok(Claim::Taken(
            DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Sending),
        ))
    }
}

/// Inserts the row in `sending`, or takes a `retry` row again; otherwise returns the row as it
/// is, with `false` in the last column. With `$11` (require an active booking) and the booking
/// no longer active, nothing is claimed and the status column says `inactive`.
fn claim_sql() -> String {
    format!(
        "WITH act AS (
   SELECT NOT $11::bool OR EXISTS (SELECT 1 FROM cal_bookings b WHERE b.id = $2 AND {active}) AS ok
 ), ins AS (
   INSERT INTO journey_deliveries AS d
     (id, booking_id, patient_id, stage, channel, recipient_role, status, attempts,
      run_id, recipient_masked, message_id, claimed_by, lease_until, send_started_at)
   SELECT $1::uuid, $2::uuid, $3::uuid, $4::text, $5::text, $6::text, 'sending', 1, $7::uuid,
          $8::text, $9::text, $10::text, now() + interval '{lease} minutes', now()
     FROM act WHERE act.ok
   ON CONFLICT (booking_id, stage, channel, recipient_role) DO UPDATE
     SET status = 'sending', attempts = d.attempts + 1, run_id = EXCLUDED.run_id,
         lease_until = EXCLUDED.lease_until, claimed_by = EXCLUDED.claimed_by,
         send_started_at = EXCLUDED.send_started_at,
         recipient_masked = EXCLUDED.recipient_masked,
         message_id = coalesce(d.message_id, EXCLUDED.message_id),
         updated_at = now()
     WHERE d.status = 'retry'
   RETURNING d.id, d.message_id, d.attempts, d.status
 )
 SELECT id, message_id, attempts, status, true FROM ins
 UNION ALL
 SELECT id, message_id, attempts,
        CASE WHEN (SELECT ok FROM act) THEN status ELSE 'inactive' END, false
   FROM journey_deliveries
  WHERE booking_id = $2 AND stage = $4 AND channel = $5 AND recipient_role = $6
    AND NOT EXISTS (SELECT 1 FROM ins)
 UNION ALL
 SELECT NULL::uuid, NULL::text, NULL::int, 'inactive', false FROM act
  WHERE NOT act.ok AND NOT EXISTS (
    SELECT 1 FROM journey_deliveries
     WHERE booking_id = $2 AND stage = $4 AND channel = $5 AND recipient_role = $6)",
        active = crate::domain::BookingStatus::sql_is_active("b"),
        lease = CLAIM_LEASE_MINUTES,
    )
}

/// An event row written together with an outcome.
pub struct EventRow {
    pub kind: EventKind,
    pub level: EventLevel,
    pub properties: serde_json::Value,
}

impl EventRow {
    /// An event at its kind's usual level ([`EventKind::level`]).
    pub fn new(kind: EventKind, properties: serde_json::Value) -> EventRow {
        EventRow {
            kind,
            level: kind.level(),
            properties,
        }
    }
}

/// The outcome of a claimed delivery.
pub struct Outcome<'a> {
    pub status: DeliveryStatus,
    pub provider_message_id: Option<&'a str>,
    pub error: Option<&'a str>,
    /// `cal_bookings` column to set (if still NULL) when the status is `sent`.
    pub mark_column: Option<&'static str>,
    /// The run's instant, written to `sent_at` and the mark column.
    pub now: DateTime<Utc>,
    pub event: Option<EventRow>,
}

/// Records an outcome, the booking's mark and the event in one statement (one transaction).
pub async fn record(db: &Db, delivery_id: Uuid, o: &Outcome<'_>) -> anyhow::Result<()> {
    let mark = match (o.status, o.mark_column) {
        (DeliveryStatus::Sent, Some(col)) => format!(
            ", mark AS (UPDATE cal_bookings SET {col} = coalesce({col}, $5), updated_at = now()
                         WHERE id = (SELECT booking_id FROM upd) RETURNING 1)"
        ),
        _ => String::new(),
    };
    let (ev_type, ev_level, ev_props) = match &o.event {
        Some(e) => (
            Some(e.kind.as_str()),
            Some(e.level.as_str()),
            Some(e.properties.clone()),
        ),
        None => (None, None, None),
    };
    let sql = format!(
        "WITH upd AS (
           UPDATE journey_deliveries
              SET status = $2, provider_message_id = coalesce($3, provider_message_id),
                  last_error = $4, lease_until = NULL, updated_at = now(),
                  sent_at = CASE WHEN $2 = 'sent' THEN $5 ELSE sent_at END
            WHERE id = $1 RETURNING booking_id
         ){mark},
         ev AS (
           INSERT INTO events (type, level, properties)
           SELECT $6, $7, $8 WHERE $6::text IS NOT NULL
           RETURNING 1
         )
         SELECT count(*) FROM upd"
    );
    let client = db.client().await?;
    let n: i64 = client
        .query_one(
            &sql,
            &[
                &delivery_id,
                &o.status.as_str(),
                &o.provider_message_id,
                &o.error,
                &o.now,
                &ev_type,
                &ev_level,
                &ev_props,
            ],
        )
        .await
        .with_context(|| format!("Failed to record delivery {delivery_id} as {}", o.status))?
        .try_get(0)?;
    anyhow::ensure!(
        n == 1,
        "delivery {delivery_id} vanished before its outcome was recorded"
    );
    Ok(())
}

/// Writes a `skipped` row for a message that will not be sent, or turns a `retry` row left by
/// an earlier attempt into `skipped` (the decision is final: counted once, never claimed
/// again); rows in any other state are left alone. Marks the booking's stage column when the
/// rule says the stage is done. One statement.
pub async fn record_skip(
    db: &Db,
    key: &DeliveryKey,
    patient_id: Option<Uuid>,
    run_id: Uuid,
    reason: &str,
    mark_column: Option<&'static str>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let mark = match mark_column {
        Some(col) => format!(
            ", mark AS (UPDATE cal_bookings SET {col} = coalesce({col}, $8), updated_at = now()
                         WHERE id = $1 RETURNING 1)"
        ),
        None => String::new(),
    };
    let sql = format!(
        "WITH ins AS (
           INSERT INTO journey_deliveries AS d
             (booking_id, patient_id, stage, channel, recipient_role, status, run_id, last_error)
           VALUES ($1, $2, $3, $4, $5, 'skipped', $6, $7)
           ON CONFLICT (booking_id, stage, channel, recipient_role) DO UPDATE
             SET status = 'skipped', run_id = EXCLUDED.run_id,
                 last_error = EXCLUDED.last_error, lease_until = NULL, updated_at = now()
             WHERE d.status = 'retry'
           RETURNING 1
         ){mark}
         SELECT $8::timestamptz"
    );
    let client = db.client().await?;
    client
        .query_one(
            &sql,
            &[
                &key.booking_id,
                &patient_id,
                &key.stage.as_str(),
                &key.channel.as_str(),
                &key.role.as_str(),
                &run_id,
                &reason,
                &now,
            ],
        )
        .await
        .with_context(|| {
            format!(
                "Failed to record the skipped {} {} {} of booking {}",
                key.stage, key.role, key.channel, key.booking_id
            )
        })?;
    Ok(())
}

/// The application name every connection of a process carries, so other runs can see it is
/// alive: `journeyctl:<random id>`.
pub fn process_application_name() -> String {
    format!("journeyctl:{}", Uuid::new_v4())
}

/// Settles every `sending` row of this ledger stage whose lease passed or whose run has no
/// connection left: a row whose send had begun (`send_started_at` set) becomes `in_doubt`; a
/// row only claimed (never handed to a provider) is given back as [`release_unsent`] does.
/// Returns how many rows became `in_doubt`: the run that promotes them counts them (once; the
/// selection does not pick such bookings again, `status` raises them until `resolve` settles
/// them). The rows given back are not counted: they are due again, and this run's selection
/// (which comes after) picks them up. One round trip; a run of several stages settles all of
/// them in one statement (`db::tidy`).
pub async fn promote_abandoned_on(
    client: &deadpool_postgres::ClientWrapper,
    stage: &str,
) -> anyhow::Result<u64> {
    count_typed(
        client,
        &format!("WITH {} SELECT count(*) FROM promoted", promote_ctes(1)),
        &[(&vec![stage], tokio_postgres::types::Type::TEXT_ARRAY)],
    )
    .await
    .with_context(|| format!("Failed to declare abandoned {stage} deliveries in doubt"))
}

/// The common table expressions of [`promote_abandoned_on`] for the ledger stages in the
/// `text[]` parameter `$p`; `promoted` answers the stage of each row now `in_doubt`. Three
/// sub-statements on disjoint rows (stamped; unstamped first claims; unstamped retries), one
/// snapshot, one transaction.
pub(crate) fn promote_ctes(p: usize) -> String {
    format!(
        "gone AS (
           SELECT d.id FROM journey_deliveries d
            WHERE d.status = 'sending' AND d.stage = ANY(${p}::text[])
              AND (d.lease_until < now()
                   OR NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(NULL) a
                                  WHERE a.application_name = d.claimed_by))
         ), promoted AS (
           UPDATE journey_deliveries d
              SET status = 'in_doubt', lease_until = NULL, claimed_by = NULL, updated_at = now(),
                  last_error = 'the run that was sending this stopped before recording the \
                                outcome: the message may or may not have gone out'
            WHERE d.id IN (SELECT id FROM gone) AND d.status = 'sending'
              AND d.send_started_at IS NOT NULL
            RETURNING d.stage
         ), given_up AS (
           DELETE FROM journey_deliveries d
            WHERE d.id IN (SELECT id FROM gone) AND d.status = 'sending'
              AND d.send_started_at IS NULL AND d.attempts = 1
         ), given_back AS (
           UPDATE journey_deliveries d
              SET status = 'retry', attempts = d.attempts - 1, lease_until = NULL,
                  claimed_by = NULL, updated_at = now()
            WHERE d.id IN (SELECT id FROM gone) AND d.status = 'sending'
              AND d.send_started_at IS NULL AND d.attempts > 1
         )"
    )
}

/// Runs `sql` (a statement answering one count) in one round trip: the parameters' types are
/// given, so nothing is prepared first.
pub(crate) async fn count_typed(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[(
        &(dyn tokio_postgres::types::ToSql + Sync),
        tokio_postgres::types::Type,
    )],
) -> anyhow::Result<u64> {
    let n: i64 = client.query_typed_one(sql, params).await?.try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Records a delivery whose sending panicked: its row, if this run claimed it and it is still
/// `sending`, becomes `failed` with the reason, and the `error` event is written, in one
/// statement. A panic is a defect on this data (it would panic again), so it is not retried.
pub async fn record_panicked(
    db: &Db,
    key: &DeliveryKey,
    run_id: Uuid,
    reason: &str,
    event: &EventRow,
) -> anyhow::Result<()> {
    let client = db.client().await?;
    client
        .query_one(
            "WITH upd AS (
               UPDATE journey_deliveries
                  SET status = 'failed', last_error = $6, lease_until = NULL, updated_at = now()
                WHERE booking_id = $1 AND stage = $2 AND channel = $3 AND recipient_role = $4
                  AND run_id = $5 AND status = 'sending'
                RETURNING 1
             ),
             ev AS (INSERT INTO events (type, level, properties) VALUES ($7, $8, $9) RETURNING 1)
             SELECT (SELECT count(*) FROM upd) + (SELECT count(*) FROM ev)",
            &[
                &key.booking_id,
                &key.stage.as_str(),
                &key.channel.as_str(),
                &key.role.as_str(),
                &run_id,
                &reason,
                &event.kind.as_str(),
                &event.level.as_str(),
                &event.properties,
            ],
        )
        .await
        .with_context(|| {
            format!(
                "Failed to record the panicked {} {} {} delivery of booking {}",
                key.stage, key.role, key.channel, key.booking_id
            )
        })?;
    Ok(())
}

/// Declares `expired` every `retry` row of this stage whose booking's window has closed (see
/// [`super::bookings::window_closed`]): no run would try it again, so it must not wait
/// silently; `status` raises expired rows and `audit` lists them. Returns how many rows
/// expired. One round trip; a run of several stages expires all of theirs in one statement
/// (`db::tidy`).
pub async fn expire_closed_on(
    client: &deadpool_postgres::ClientWrapper,
    stage: crate::domain::Stage,
    now: DateTime<Utc>,
    window_from: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let p = ExpireParams::of(stage, window_from);
    let sql = format!(
        "WITH {} SELECT count(*) FROM expired_0",
        expire_ctes(stage, 0, [2, 3, 4])
    );
    let mut params: Vec<(&(dyn tokio_postgres::types::ToSql + Sync), Type)> =
        vec![(&now, Type::TIMESTAMPTZ)];
    params.extend(p.bound());
    count_typed(client, &sql, &params)
        .await
        .with_context(|| format!("Failed to expire the {stage} retries whose window closed"))
}

/// The values [`expire_ctes`] binds for one stage: the window's earlier edge, the ledger stage,
/// and the lead an SMS held by quiet hours needs (seconds).
pub(crate) struct ExpireParams {
    from: DateTime<Utc>,
    ledger: &'static str,
    held_lead: i64,
}

impl ExpireParams {
    pub(crate) fn of(stage: crate::domain::Stage, from: DateTime<Utc>) -> ExpireParams {
        ExpireParams {
            from,
            ledger: stage.ledger_stage(),
            held_lead: crate::domain::quiet_hours::min_lead_of(stage.facts())
                .unwrap_or_else(chrono::Duration::zero)
                .num_seconds(),
        }
    }

    /// The three values with their types, in the order of `expire_ctes`'s `params`.
    pub(crate) fn bound(&self) -> [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 3] {
        [
            (&self.from, Type::TIMESTAMPTZ),
            (&self.ledger, Type::TEXT),
            (&self.held_lead, Type::INT8),
        ]
    }
}

/// The common table expressions that expire one stage's closed retries, named `dropped_{i}`
/// and `expired_{i}` (one row per expired delivery). `$1` is the run's instant; `params` the
/// placeholders of [`ExpireParams::bound`] (window edge, ledger stage, held lead).
pub(crate) fn expire_ctes(stage: crate::domain::Stage, i: usize, params: [usize; 3]) -> String {
    let sql = format!(
        "dropped_{i} AS (
           UPDATE journey_deliveries d
              SET status = 'skipped', lease_until = NULL, updated_at = now(),
                  last_error = 'booking no longer active: the SMS held by quiet hours is not sent'
             FROM cal_bookings b
            WHERE d.booking_id = b.id AND d.stage = $3 AND d.status = 'retry'
              AND d.not_before IS NOT NULL AND NOT {active}
            RETURNING d.id),
         expired_{i} AS (
           UPDATE journey_deliveries d
              SET status = 'expired', lease_until = NULL, updated_at = now(),
                  last_error = 'the window closed before it could be sent' ||
                               coalesce(' (last error: ' || d.last_error || ')', '')
             FROM cal_bookings b
            WHERE d.booking_id = b.id AND d.stage = $3 AND d.status = 'retry'
              AND $1::timestamptz IS NOT NULL AND $2::timestamptz IS NOT NULL
              AND {closed}
              AND d.id NOT IN (SELECT id FROM dropped_{i})
              -- An SMS held by quiet hours stays open past the window while the session is
              -- still far enough ahead for it (`domain::quiet_hours::min_lead`).
              AND NOT (d.not_before IS NOT NULL
                       AND b.start_time >= $1::timestamptz + $4::bigint * interval '1 second')
            RETURNING 1)",
        closed = super::bookings::window_closed(stage),
        active = crate::domain::BookingStatus::sql_is_active("b"),
    );
    super::renumber(&sql, &[(2, params[0]), (3, params[1]), (4, params[2])])
}

/// Settles the rows this run still has in `sending` after its drain bound passed: those whose
/// send had begun (`send_started_at` set) are declared `in_doubt` (their provider never
/// answered in time, so they may or may not have gone out); those only claimed are given back
/// as [`release_unsent`] does. One statement. Returns how many became `in_doubt`.
pub async fn abandon_in_flight(db: &Db, run_id: Uuid, stage: &str) -> anyhow::Result<u64> {
    use tokio_postgres::types::Type;
    let client = db.client().await?;
    count_typed(
        &client,
        "WITH u AS (
           UPDATE journey_deliveries
              SET status = 'in_doubt', lease_until = NULL, claimed_by = NULL, updated_at = now(),
                  last_error = 'the run stopped before the provider answered: the message \
                                may or may not have gone out'
            WHERE run_id = $1 AND stage = $2 AND status = 'sending'
              AND send_started_at IS NOT NULL
            RETURNING 1
         ), del AS (
           DELETE FROM journey_deliveries
            WHERE run_id = $1 AND stage = $2 AND status = 'sending'
              AND send_started_at IS NULL AND attempts = 1
         ), back AS (
           UPDATE journey_deliveries
              SET status = 'retry', attempts = attempts - 1, lease_until = NULL,
                  claimed_by = NULL, updated_at = now()
            WHERE run_id = $1 AND stage = $2 AND status = 'sending'
              AND send_started_at IS NULL AND attempts > 1
         )
         SELECT count(*) FROM u",
        &[(&run_id, Type::UUID), (&stage, Type::TEXT)],
    )
    .await
    .with_context(|| format!("Failed to declare this run's unanswered {stage} sends in doubt"))
}

/// What [`StampSession::stamp`] answers for one id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// Stamped and committed: to be sent now.
    Stamped,
    /// Still this run's claim, but its booking is no longer active (asked with
    /// `require_active`): not to be sent; the claim is given back with the batch's unsent.
    Inactive,
}

/// The connection a batch's stamps are written on ([`StampSession::stamp`]), held for the
/// batch's life.
///
/// The stamp is the statement a batch runs most often (one per few messages), so it is
/// prepared once and always runs on its one cached plan (`plan_cache_mode =
/// force_generic_plan`): no parsing or planning per statement. That plan is made once,
/// possibly while the ledger is nearly empty, and kept while it grows; on a small table the
/// planner would rightly pick a sequential scan, which would then read the whole ledger at
/// every stamp. So this connection also runs with `enable_seqscan` off: the plan finds the
/// rows through the primary key, whatever the ledger's size when it was made. The settings
/// are the connection's own: [`StampSession::finish`] resets them before the connection goes
/// back to the pool, and a session dropped without that (a failed reset, a run cut short)
/// takes its connection out of the pool and closes it.
pub struct StampSession {
    held: super::pool::Held,
}

impl StampSession {
    /// Takes a pooled connection and sets its planner settings for the stamps.
    pub async fn open(db: &Db) -> anyhow::Result<StampSession> {
        // Held from here on: a failed SET closes the connection.
        let held = super::pool::Held::take(db).await?;
        held.conn()?
            .batch_execute("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
            .await
            .context("Failed to prepare the send-started stamps' connection")?;
        Ok(StampSession { held })
    }

    /// Stamps the rows of `ids` that are still this run's claims (`sending`, `run_id`), with
    /// `require_active` only those whose booking is still active, and answers per id what it
    /// did; an id missing from the answer is no longer this run's to send. Rows are locked in
    /// the ledger's key order, the order every claim and record locks them in, so two runs
    /// touching the same rows wait on each other instead of deadlocking.
    pub async fn stamp(
        &self,
        ids: &[Uuid],
        run_id: Uuid,
        require_active: bool,
    ) -> anyhow::Result<HashMap<Uuid, Stamp>> {
        // The ids are locked in key order by the inner query (an init plan), and the update
        // finds them through the primary key. `(status = 'sending') IS TRUE` is the same test
        // as `status = 'sending'` (the column is never NULL) in a form no index answers: a plan
        // made while no row was `sending` would otherwise read every open row of the ledger
        // through `journey_deliveries_open_idx` instead of looking the ids up. A claim whose
        // booking is no longer active keeps no stamp (NULL since its claim) and answers `false`.
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "UPDATE journey_deliveries d
                    SET send_started_at = CASE
                          WHEN NOT $3 OR EXISTS (SELECT 1 FROM cal_bookings b
                                                  WHERE b.id = d.booking_id AND {active})
                          THEN now() END
                  WHERE d.id = ANY(ARRAY(
                          SELECT id FROM journey_deliveries
                           WHERE id = ANY($1::uuid[]) AND (status = 'sending') IS TRUE
                             AND run_id = $2
                           ORDER BY booking_id, stage, channel, recipient_role
                             FOR UPDATE))
                 RETURNING d.id, d.send_started_at IS NOT NULL",
                active = crate::domain::BookingStatus::sql_is_active("b"),
            )
        });
        let failed = || format!("Failed to stamp {} delivery(ies) as being sent", ids.len());
        let conn = self.held.conn()?;
        let stmt = conn
            .prepare_typed_cached(&SQL, &[Type::UUID_ARRAY, Type::UUID, Type::BOOL])
            .await
            .with_context(failed)?;
        let rows = conn
            .query(&stmt, &[&ids, &run_id, &require_active])
            .await
            .with_context(failed)?;
        rows.iter()
            .map(|r| {
                let stamp = match r.try_get::<_, bool>(1)? {
                    true => Stamp::Stamped,
                    false => Stamp::Inactive,
                };
                Ok((r.try_get::<_, Uuid>(0)?, stamp))
            })
            .collect()
    }

    /// Gives the connection back to the pool with its planner settings reset (closed instead
    /// when the reset fails).
    pub async fn finish(mut self) {
        let reset = match self.held.conn() {
            Ok(c) => c
                .batch_execute("RESET enable_seqscan; RESET plan_cache_mode")
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(e),
        };
        match reset {
            Ok(()) => self.held.release(),
            Err(e) => log::debug!("the stamps' connection is closed, not pooled: {e}"),
        }
    }
}

/// One message of a batch claim ([`claim_batch`]).
pub struct BatchClaim<'a> {
    pub key: &'a DeliveryKey,
    pub patient_id: Option<Uuid>,
    pub recipient_masked: String,
}

/// Claims a batch of messages of one ledger stage in one statement (it commits on its own,
/// before any of them is sent), with the same rules per message as [`claim`] without patient
/// exclusivity: a new row, or a `retry` row taken again; otherwise the row as it is; with
/// `require_active` and the booking no longer active, [`Claim::Inactive`]. The answers are in
/// the order of `items`. Rows are inserted in key order, so runs claiming overlapping batches
/// at the same time wait on each other instead of deadlocking. The rows are not stamped as
/// being sent: each is, by [`StampSession::stamp`], right before its own send.
pub async fn claim_batch(
    client: &deadpool_postgres::ClientWrapper,
    stage: &str,
    items: &[BatchClaim<'_>],
    run_id: Uuid,
    claimed_by: &str,
    message_id_domain: &str,
    require_active: bool,
) -> anyhow::Result<Vec<Claim>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let n = items.len();
    let a = BatchArrays::of(items, message_id_domain);
    use tokio_postgres::types::Type;
    // Planned for each batch (one round trip, nothing prepared): a cached plan keeps the
    // choices made on the ledger's size when it was made (see `StampSession`, whose one
    // statement runs often enough to be worth a connection of its own).
    let rows = client
        .query_typed(
            &claim_batch_sql(),
            &[
                (&a.ids, Type::UUID_ARRAY),
                (&a.bookings, Type::UUID_ARRAY),
                (&a.patients, Type::UUID_ARRAY),
                (&a.channels, Type::TEXT_ARRAY),
                (&a.roles, Type::TEXT_ARRAY),
                (&a.masked, Type::TEXT_ARRAY),
                (&a.message_ids, Type::TEXT_ARRAY),
                (&stage, Type::TEXT),
                (&run_id, Type::UUID),
                (&claimed_by, Type::TEXT),
                (&require_active, Type::BOOL),
            ],
        )
        .await
        .with_context(|| format!("Failed to claim a batch of {n} {stage} deliveries"))?;
    let mut out: Vec<Option<Claim>> = vec![None; n];
    for r in rows {
        let i: i64 = r.try_get(0)?;
        let i = usize::try_from(i - 1).ok().filter(|i| *i < n);
        let Some(i) = i else {
            anyhow::bail!("the batch claim answered for an item it was not given");
        };
        out[i] = Some(batch_claim_of(&r, &a.message_ids[i])?);
    }
    out.into_iter()
        .map(|c| c.ok_or_else(|| anyhow::anyhow!("the batch claim left an item unanswered")))
        .collect()
}

/// `$1..$7` of [`claim_batch_sql`]: one array per column, one element per item, in order.
struct BatchArrays<'a> {
    ids: Vec<Uuid>,
    bookings: Vec<Uuid>,
    patients: Vec<Option<Uuid>>,
    channels: Vec<&'static str>,
    roles: Vec<&'static str>,
    masked: Vec<&'a str>,
    message_ids: Vec<String>,
}

impl<'a> BatchArrays<'a> {
    fn of(items: &'a [BatchClaim<'_>], message_id_domain: &str) -> BatchArrays<'a> {
        let ids: Vec<Uuid> = items.iter().map(|_| Uuid::new_v4()).collect();
        BatchArrays {
            message_ids: ids
                .iter()
                .map(|id| format!("<{id}@{message_id_domain}>"))
                .collect(),
            ids,
            bookings: items.iter().map(|it| it.key.booking_id).collect(),
            patients: items.iter().map(|it| it.patient_id).collect(),
            channels: items.iter().map(|it| it.key.channel.as_str()).collect(),
            roles: items.iter().map(|it| it.key.role.as_str()).collect(),
            masked: items
                .iter()
                .map(|it| it.recipient_masked.as_str())
                .collect(),
        }
    }
}

/// One answer row of [`claim_batch_sql`], read; `message_id` is the one the item was offered.
fn batch_claim_of(r: &tokio_postgres::Row, message_id: &str) -> anyhow::Result<Claim> {
    let claimed: bool = r.try_get(5)?;
    let ok: bool = r.try_get(6)?;
    let status: Option<String> = r.try_get(4)?;
    Ok(if claimed {
        Claim::Claimed {
            id: r.try_get(1)?,
            message_id: r
                .try_get::<_, Option<String>>(2)?
                .unwrap_or_else(|| message_id.to_string()),
            attempt: r.try_get(3)?,
        }
    } else if !ok {
        Claim::Inactive
    } else {
        // No row visible: another run claimed it after this statement's snapshot.
        Claim::Taken(
            status
                .as_deref()
                .and_then(DeliveryStatus::parse)
                .unwrap_or(DeliveryStatus::Sending),
        )
    })
}

/// Parameters: `$1..$7` arrays (id, booking, patient, channel, role, masked recipient,
/// Message-ID), `$8` stage, `$9` run, `$10` claimed_by, `$11` require an active booking.
/// Answers (item number, id, message_id, attempts, status, claimed, booking active).
fn claim_batch_sql() -> String {
    format!(
        "WITH req AS (
   SELECT r.*, NOT $11::bool OR EXISTS (SELECT 1 FROM cal_bookings b WHERE b.id = r.booking_id AND {active}) AS ok
     FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[])
          WITH ORDINALITY AS r(id, booking_id, patient_id, channel, role, masked, message_id, n)
 ), ins AS (
   INSERT INTO journey_deliveries AS d
     (id, booking_id, patient_id, stage, channel, recipient_role, status, attempts,
      run_id, recipient_masked, message_id, claimed_by, lease_until)
   SELECT id, booking_id, patient_id, $8::text, channel, role, 'sending', 1, $9::uuid,
          masked, message_id, $10::text, now() + interval '{lease} minutes'
     FROM req WHERE ok
    ORDER BY booking_id, channel, role
   ON CONFLICT (booking_id, stage, channel, recipient_role) DO UPDATE
     SET status = 'sending', attempts = d.attempts + 1, run_id = EXCLUDED.run_id,
         lease_until = EXCLUDED.lease_until, claimed_by = EXCLUDED.claimed_by,
         send_started_at = NULL,
         recipient_masked = EXCLUDED.recipient_masked,
         message_id = coalesce(d.message_id, EXCLUDED.message_id),
         updated_at = now()
     WHERE d.status = 'retry'
   RETURNING d.id, d.booking_id, d.channel, d.recipient_role, d.message_id, d.attempts
 )
 SELECT r.n, i.id, i.message_id, i.attempts, 'sending', true, r.ok
   FROM req r JOIN ins i
     ON i.booking_id = r.booking_id AND i.channel = r.channel AND i.recipient_role = r.role
 UNION ALL
 SELECT r.n, d.id, d.message_id, d.attempts, d.status, false, r.ok
   FROM req r LEFT JOIN journey_deliveries d
     ON d.booking_id = r.booking_id AND d.stage = $8 AND d.channel = r.channel
    AND d.recipient_role = r.role
  WHERE NOT EXISTS (SELECT 1 FROM ins i WHERE i.booking_id = r.booking_id
                      AND i.channel = r.channel AND i.recipient_role = r.role)",
        active = crate::domain::BookingStatus::sql_is_active("b"),
        lease = CLAIM_LEASE_MINUTES,
    )
}

/// The outcome of one claimed delivery, owned, for [`record_batch`].
pub struct OwnedOutcome {
    pub delivery_id: Uuid,
    pub status: DeliveryStatus,
    pub provider_message_id: Option<String>,
    pub error: Option<String>,
    pub mark_column: Option<&'static str>,
    pub event: Option<EventRow>,
}

/// Records the outcomes of a batch in one statement (one transaction): each delivery's row,
/// the booking's mark column on the first `sent` (one UPDATE of the bookings for the whole
/// batch, only where the column is still NULL), and the events. Fails as a whole: then every
/// row stays `sending` and becomes `in_doubt`, never resent blindly.
pub async fn record_batch(
    client: &deadpool_postgres::ClientWrapper,
    outcomes: &[OwnedOutcome],
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut cols: Vec<&'static str> = outcomes
        .iter()
        .filter(|o| o.status == DeliveryStatus::Sent)
        .filter_map(|o| o.mark_column)
        .collect();
    cols.sort_unstable();
    cols.dedup();
    let n = outcomes.len();
    let ids: Vec<Uuid> = outcomes.iter().map(|o| o.delivery_id).collect();
    let statuses: Vec<&str> = outcomes.iter().map(|o| o.status.as_str()).collect();
    let providers: Vec<Option<&str>> = outcomes
        .iter()
        .map(|o| o.provider_message_id.as_deref())
        .collect();
    let errors: Vec<Option<&str>> = outcomes.iter().map(|o| o.error.as_deref()).collect();
    let mark_cols: Vec<Option<&str>> = outcomes.iter().map(|o| o.mark_column).collect();
    let events: Vec<Option<&EventRow>> = outcomes.iter().map(|o| o.event.as_ref()).collect();
    let ev_types: Vec<Option<&str>> = events.iter().map(|e| e.map(|e| e.kind.as_str())).collect();
    let ev_levels: Vec<Option<&str>> = events.iter().map(|e| e.map(|e| e.level.as_str())).collect();
    let ev_props: Vec<Option<&serde_json::Value>> =
        events.iter().map(|e| e.map(|e| &e.properties)).collect();
    use tokio_postgres::types::Type;
    // Planned for each batch (one round trip, nothing prepared): a cached plan keeps the
    // choices made on the ledger's size when it was made (see `StampSession`, whose one
    // statement runs often enough to be worth a connection of its own).
    let rows = client
        .query_typed(
            &record_batch_sql(&cols),
            &[
                (&ids, Type::UUID_ARRAY),
                (&statuses, Type::TEXT_ARRAY),
                (&providers, Type::TEXT_ARRAY),
                (&errors, Type::TEXT_ARRAY),
                (&mark_cols, Type::TEXT_ARRAY),
                (&ev_types, Type::TEXT_ARRAY),
                (&ev_levels, Type::TEXT_ARRAY),
                (&ev_props, Type::JSONB_ARRAY),
                (&now, Type::TIMESTAMPTZ),
            ],
        )
        .await
        .with_context(|| format!("Failed to record the outcomes of {n} deliveries"))?;
    let recorded: i64 = rows
        .first()
        .context("the batch record answered no row")?
        .try_get(0)?;
    anyhow::ensure!(
        recorded == n as i64,
        "{} of {n} deliveries vanished before their outcomes were recorded",
        n as i64 - recorded
    );
    Ok(())
}

/// The statement of [`record_batch`] for a batch that marks these booking columns. Parameters:
/// `$1..$8` arrays (id, status, provider id, error, mark column, event type, level,
/// properties), `$9` the run's instant.
fn record_batch_sql(cols: &[&'static str]) -> String {
    let marks = marks_sql(cols);
    format!(
        "WITH o AS (
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::text[], $7::text[], $8::jsonb[])
                    AS o(id, status, provider_id, error, mark, ev_type, ev_level, ev_props)
         ), locked AS (
           -- Row locks in the claims' order (booking, channel, role): another run's batch
           -- claim locks the same rows in that order, so the two can never wait on each other
           -- in a cycle (an UPDATE in plan order could).
           SELECT k.id FROM journey_deliveries k WHERE k.id = ANY($1)
            ORDER BY k.booking_id, k.channel, k.recipient_role FOR UPDATE
         ), upd AS (
           UPDATE journey_deliveries d
              SET status = o.status, provider_message_id = coalesce(o.provider_id, d.provider_message_id),
                  last_error = o.error, lease_until = NULL, updated_at = now(),
                  sent_at = CASE WHEN o.status = 'sent' THEN $9 ELSE d.sent_at END
             FROM o
            -- The locked ids as one array, so the rows are found through the primary key.
            -- Joined to `o` or `locked` instead, a young ledger (a few thousand rows) was read
            -- whole for every batch, or `locked` once per row.
            WHERE d.id = o.id AND d.id = ANY(ARRAY(SELECT id FROM locked))
           RETURNING d.booking_id, o.status, o.mark
         ){marks},
         ev AS (
           INSERT INTO events (type, level, properties)
           SELECT ev_type, ev_level, ev_props FROM o WHERE ev_type IS NOT NULL
           RETURNING 1
         )
         SELECT count(*) FROM upd"
    )
}

/// The sub-statement of [`record_batch_sql`] that sets the booking columns `cols` on the first
/// `sent`: one UPDATE for every mark column, since two sub-statements of one statement cannot
/// both update the same booking (the confirmation sets two columns of one row).
fn marks_sql(cols: &[&'static str]) -> String {
    if cols.is_empty() {
        return String::new();
    }
    // The column names come from `Stage::mark_column`, never from data.
    let sets: Vec<String> = cols
        .iter()
        .map(|col| {
            format!(
                "{col} = CASE WHEN '{col}' = ANY(m.cols) THEN coalesce(b.{col}, $9) \
                 ELSE b.{col} END"
            )
        })
        .collect();
    let unset: Vec<String> = cols
        .iter()
        .map(|col| format!("(b.{col} IS NULL AND '{col}' = ANY(m.cols))"))
        .collect();
    format!(
        ", marked AS (SELECT booking_id, array_agg(mark) AS cols FROM upd
             WHERE status = 'sent' AND mark IS NOT NULL GROUP BY booking_id),
           booked AS (
             -- The bookings locked in id order, as every run's record locks them.
             SELECT x.id, m.cols FROM cal_bookings x JOIN marked m ON m.booking_id = x.id
              ORDER BY x.id FOR NO KEY UPDATE OF x),
           mark AS (UPDATE cal_bookings b SET {}, updated_at = now()
            FROM booked m WHERE b.id = m.id AND ({}) RETURNING 1)",
        sets.join(", "),
        unset.join(" OR ")
    )
}

/// Gives back rows this run claimed in a batch but never handed to a provider (the run was
/// told to stop first): a row the claim created is removed (as if never claimed), a `retry`
/// row taken again is `retry` again. One statement; only this run's `sending` rows change.
pub async fn release_unsent(
    client: &deadpool_postgres::ClientWrapper,
    run_id: Uuid,
    ids: &[Uuid],
) -> anyhow::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let stmt = client
        .prepare_cached(
            "WITH locked AS (
               -- In the claims' order, so this never deadlocks with another run's claim.
               SELECT k.id FROM journey_deliveries k
                WHERE k.id = ANY($1) AND k.run_id = $2 AND k.status = 'sending'
                ORDER BY k.booking_id, k.channel, k.recipient_role FOR UPDATE
             ), del AS (
               DELETE FROM journey_deliveries
                WHERE id IN (SELECT id FROM locked) AND run_id = $2 AND status = 'sending'
                  AND attempts = 1
                RETURNING 1
             ), back AS (
               UPDATE journey_deliveries
                  SET status = 'retry', attempts = attempts - 1, lease_until = NULL,
                      claimed_by = NULL, updated_at = now()
                WHERE id IN (SELECT id FROM locked) AND run_id = $2 AND status = 'sending'
                  AND attempts > 1
                RETURNING 1
             )
             SELECT (SELECT count(*) FROM del) + (SELECT count(*) FROM back)",
        )
        .await
        .context("Failed to prepare the release of unsent claims")?;
    let n: i64 = client
        .query_one(&stmt, &[&ids, &run_id])
        .await
        .context("Failed to give back the claims of messages this run did not send")?
        .try_get(0)?;
    Ok(n as u64)
}
