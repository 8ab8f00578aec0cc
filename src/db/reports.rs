//! What operators read and settle: run history and red flags (`status`), misses (`audit`, whose
//! windows and eligibility come from each stage's facts), settling deliveries in doubt
//! (`resolve`). Read-mostly; `resolve` writes one row and its booking mark.

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::Db;
use crate::domain::{
    Anchor, BookingStatus, Counters, DeliveryStatus, Stage, StageFacts, StatusRule,
};

/// One finished run of a stage (a `followups` run counts for each of its stages).
#[derive(Clone, Debug)]
pub(crate) struct StageRun {
    pub stage: Stage,
    pub counters: Counters,
}

/// Finished runs since `since` (by their `now`), newest first, split per stage.
pub(crate) async fn stage_runs(db: &Db, since: DateTime<Utc>) -> anyhow::Result<Vec<StageRun>> {
    let rows = db
        .client()
        .await?
        .query(
            "SELECT s->>'stage', s->'counters'
             FROM journey_runs r, jsonb_array_elements(r.stages) s
             WHERE r.finished_at IS NOT NULL AND r.now >= $1
               AND NOT coalesce((s->>'skipped_locked')::boolean, false)
             ORDER BY r.now DESC, r.finished_at DESC",
            &[&since],
        )
        .await
        .context("Failed to read journey_runs")?;
    let mut out = Vec::new();
    for r in rows {
        let name: Option<String> = r.try_get(0)?;
        let Some(stage) = name.as_deref().and_then(Stage::parse) else {
            continue;
        };
        let counters: Option<serde_json::Value> = r.try_get(1)?;
        out.push(StageRun {
            stage,
            counters: counters
                .as_ref()
                .map(Counters::from_json)
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The newest finished run of each stage, whenever it was.
pub(crate) async fn last_finished(db: &Db) -> anyhow::Result<Vec<(Stage, DateTime<Utc>)>> {
    let rows = db
        .client()
        .await?
        .query(
            "SELECT s->>'stage', max(r.now)
             FROM journey_runs r, jsonb_array_elements(r.stages) s
             WHERE r.finished_at IS NOT NULL
               AND NOT coalesce((s->>'skipped_locked')::boolean, false)
             GROUP BY 1",
            &[],
        )
        .await
        .context("Failed to read journey_runs")?;
    let mut out = Vec::new();
    for r in rows {
        let name: Option<String> = r.try_get(0)?;
        if let Some(stage) = name.as_deref().and_then(Stage::parse) {
            out.push((stage, r.try_get(1)?));
        }
    }
    Ok(out)
}

#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Delivery {
    pub id: Uuid,
    pub booking_id: Uuid,
    pub stage: String,
    pub channel: String,
    pub recipient_role: String,
    #[serde(serialize_with = "status_text")]
    pub status: DeliveryStatus,
    pub recipient: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A delivery's status as its database text (`in_doubt`), in `status --json`.
fn status_text<S: serde::Serializer>(status: &DeliveryStatus, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(status.as_str())
}

/// Runs still open past their deadline (deadline plus drain bound, wall clock): a hung run
/// holding its stage's lock. `(command, started_at)`.
pub(crate) async fn overdue_runs(db: &Db) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
    let rows = db
        .client()
        .await?
        .query(
            "SELECT command, started_at FROM journey_runs
             WHERE finished_at IS NULL AND deadline_at < now() ORDER BY started_at",
            &[],
        )
        .await
        .context("Failed to read unfinished runs")?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// `expired` deliveries per (stage, channel): messages whose window closed unsent.
pub(crate) async fn expired(db: &Db) -> anyhow::Result<Vec<(String, String, i64)>> {
    let rows = db
        .client()
        .await?
        .query(
            "SELECT stage, channel, count(*) FROM journey_deliveries WHERE status = 'expired'
             GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .context("Failed to read expired deliveries")?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// Deliveries left `in_doubt`.
pub(crate) async fn in_doubt(db: &Db) -> anyhow::Result<Vec<Delivery>> {
    let rows = db
        .client()
        .await?
        .query(
            "SELECT id, booking_id, stage, channel, recipient_role, status, recipient_masked,
                    last_error, updated_at
             FROM journey_deliveries WHERE status = 'in_doubt' ORDER BY updated_at",
            &[],
        )
        .await
        .context("Failed to read deliveries in doubt")?;
    rows.iter().map(delivery).collect()
}

/// Columns: id, booking_id, stage, channel, recipient_role, status, recipient_masked,
/// last_error, updated_at.
fn delivery(r: &tokio_postgres::Row) -> anyhow::Result<Delivery> {
    Ok(Delivery {
        id: r.try_get(0)?,
        booking_id: r.try_get(1)?,
        stage: r.try_get(2)?,
        channel: r.try_get(3)?,
        recipient_role: r.try_get(4)?,
        status: {
            let text: String = r.try_get(5)?;
            DeliveryStatus::parse(&text)
                .ok_or_else(|| anyhow::anyhow!("unknown delivery status {text:?}"))?
        },
        recipient: r.try_get(6)?,
        last_error: r.try_get(7)?,
        updated_at: r.try_get(8)?,
    })
}

/// Settles an `in_doubt` delivery: `sent` (the message did go out; the booking's stage is
/// marked) or `retry` (a later run sends it again while the window is open). Returns the row
/// as it was, or `None` when no such delivery is in doubt.
pub(crate) async fn resolve(
    db: &Db,
    id: Uuid,
    sent: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Delivery>> {
    let mut client = db.client().await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT id, booking_id, stage, channel, recipient_role, status, recipient_masked,
                    last_error, updated_at
             FROM journey_deliveries WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .context("Failed to read the delivery")?;
    let Some(r) = row else { return Ok(None) };
    let d = delivery(&r)?;
    if d.status != DeliveryStatus::InDoubt {
        return Ok(Some(d));
    }
    let status = if sent {
        DeliveryStatus::Sent
    } else {
        DeliveryStatus::Retry
    }
    .as_str();
    tx.execute(
        "UPDATE journey_deliveries
            SET status = $2, updated_at = now(),
                sent_at = CASE WHEN $2 = 'sent' THEN $3 ELSE sent_at END,
                last_error = 'resolved by an operator as ' || $2 || coalesce(': ' || last_error, '')
          WHERE id = $1",
        &[&id, &status, &now],
    )
    .await
    .context("Failed to settle the delivery")?;
    if sent {
        if let Some(col) = mark_column(&d.stage, &d.recipient_role) {
            tx.execute(
                &format!(
                    "UPDATE cal_bookings SET {col} = coalesce({col}, $2), updated_at = now()
                     WHERE id = $1"
                ),
                &[&d.booking_id, &now],
            )
            .await
            .context("Failed to mark the booking")?;
        }
    }
    tx.execute(
        "INSERT INTO events (type, level, properties) VALUES ('delivery_resolved', 'info', $1)",
        &[
            &serde_json::json!({"delivery_id": id, "booking_id": d.booking_id, "stage": d.stage,
                              "channel": d.channel, "resolved_as": status}),
        ],
    )
    .await
    .context("Failed to write the resolve event")?;
    tx.commit().await?;
    Ok(Some(d))
}

/// The booking column a ledger stage and role mark (see [`StageFacts::mark_of`]).
fn mark_column(ledger_stage: &str, role: &str) -> Option<&'static str> {
    let stage = Stage::from_ledger_stage(ledger_stage)?;
    stage
        .facts()
        .mark_of(crate::domain::RecipientRole::parse(role)?)
}

/// A booking whose window for a stage has passed without a `sent` patient message.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Miss {
    pub booking_id: Uuid,
    pub cal_uid: String,
    pub stage: &'static str,
    /// `missed` (no recorded reason), or the recorded outcome: `skipped`, `failed`,
    /// `in_doubt`, `retry`, `test`, `no_patient`, `no_contact`.
    pub outcome: String,
    /// The channel of the recorded outcome (`email`, `sms`), when there is one.
    pub channel: Option<String>,
    pub detail: Option<String>,
}

impl Miss {
    pub(crate) fn unexplained(&self) -> bool {
        self.outcome == "missed"
    }
}

/// Audits one stage: bookings whose window closed in `[from, now]` and that should have had
/// the stage's patient message. Which bookings, and where the window closes, come from the
/// stage's facts (see [`audit_sql`]).
pub(crate) async fn audit(
    db: &Db,
    stage: Stage,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Miss>> {
    let facts = stage.facts();
    // The window's edges, bound in seconds: $4 the near edge (where the window closes),
    // $5 the far edge (where it opens).
    let (near_edge, far_edge) = facts.window;
    let seconds = |d: chrono::Duration| d.num_seconds() as f64;
    let types = [
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::FLOAT8,
        Type::FLOAT8,
    ];
    let client = db.client().await?;
    let statement = client
        .prepare_typed(&audit_sql(facts), &types)
        .await
        .with_context(|| format!("Failed to prepare the audit of {stage}"))?;
    let rows = client
        .query(
            &statement,
            &[
                &from,
                &now,
                &facts.ledger_stage.as_str(),
                &seconds(near_edge),
                &seconds(far_edge),
            ],
        )
        .await
        .with_context(|| format!("Failed to audit {stage}"))?;
    rows.iter().map(|r| miss_of(facts, r)).collect()
}

/// Where a stage's window closes, and which bookings the stage is meant for, as SQL over `b`
/// (`$4`/`$5` the near and far edges of the window as intervals).
fn audit_scope(facts: &StageFacts) -> (String, String) {
    let near = "make_interval(secs => $4)";
    let far = "make_interval(secs => $5)";
    let sel = &facts.selection;
    let mut eligible = Vec::new();
    if let Some(kind) = sel.booking_kind {
        eligible.push(format!("b.booking_kind = '{}'", kind.as_str()));
    }
    eligible.push(match sel.statuses {
        // PENDING was never accepted by the host: nothing was due for it. A booking that took
        // place since was due.
        StatusRule::Active | StatusRule::NotFellThrough => format!(
            "({} OR {})",
            BookingStatus::sql_is_active("b"),
            BookingStatus::Completed.sql_is("b")
        ),
        // A reschedule request is no lost patient.
        StatusRule::Cancelled => format!(
            "{} AND NOT coalesce(b.request_reschedule, false)",
            BookingStatus::Cancelled.sql_is("b")
        ),
    });
    // For every stage with a look-back the window closes when `anchor - now` equals the near
    // edge: `anchor - $4`.
    let closes = match sel.anchor {
        Anchor::CreatedWhileSessionAhead => {
            // Recovery keeps trying until the session starts; a booking made less than the
            // far edge before its session never reaches the window.
            eligible.push(format!("b.start_time > b.created_at - {far}"));
            "b.start_time".to_string()
        }
        Anchor::StartTime => {
            // Booked after the window opened: never due.
            eligible.push(format!("b.created_at < b.start_time - {far}"));
            format!("b.start_time - {near}")
        }
        other => format!("{} - {near}", super::bookings::anchor_column(other, "b")),
    };
    (closes, eligible.join(" AND "))
}

/// The audit query of a stage. Booking level: nothing went out to the patient. Channel level:
/// one channel went out (the stage column is set) but another did not, and would otherwise
/// hide behind it.
fn audit_sql(facts: &StageFacts) -> String {
    let (closes, eligible) = audit_scope(facts);
    format!(
        "SELECT b.id, b.cal_uid, d.status, d.last_error, d.channel,
                coalesce(b.is_test, false) OR coalesce(p.metadata->>'is_test', '') = 'true',
                b.patient_id IS NOT NULL AND p.id IS NULL OR b.patient_id IS NULL,
                (coalesce(trim(p.email), '') = '' OR lower(p.email) LIKE 'temp\\_%')
                  AND coalesce(trim(p.phone_number), '') = '',
                {closes}
         FROM cal_bookings b
         LEFT JOIN people p ON p.id = b.patient_id
         LEFT JOIN LATERAL (
           SELECT status, last_error, channel FROM journey_deliveries d
           WHERE d.booking_id = b.id AND d.stage = $3 AND d.recipient_role = 'patient'
           ORDER BY (d.status = 'sent') DESC, d.updated_at DESC LIMIT 1
         ) d ON true
         WHERE {closes} BETWEEN $1 AND $2 AND {eligible}
           AND b.{mark} IS NULL
           AND coalesce(d.status, '') <> 'sent'
         UNION ALL
         SELECT b.id, b.cal_uid, d.status, d.last_error, d.channel, false, false, false,
                {closes}
         FROM cal_bookings b
         JOIN journey_deliveries d ON d.booking_id = b.id AND d.stage = $3
              AND d.recipient_role = 'patient'
              AND d.status IN ('failed', 'retry', 'in_doubt', 'expired')
         WHERE {closes} BETWEEN $1 AND $2 AND {eligible}
           AND b.{mark} IS NOT NULL
         ORDER BY 9",
        mark = facts.mark_column,
    )
}

/// One row of [`audit_sql`] as a [`Miss`]: the recorded outcome, else what the booking
/// itself explains (test data, no patient, no contact), else the stage's own word for it.
fn miss_of(facts: &StageFacts, r: &tokio_postgres::Row) -> anyhow::Result<Miss> {
    let status: Option<String> = r.try_get(2)?;
    let error: Option<String> = r.try_get(3)?;
    let (is_test, no_patient, no_contact): (bool, bool, bool) =
        (r.try_get(5)?, r.try_get(6)?, r.try_get(7)?);
    let (outcome, detail) = match status {
        Some(s) => (s, error),
        None => {
            let (outcome, detail) = if is_test {
                ("test", "test booking or patient")
            } else if no_patient {
                ("no_patient", "booking has no patient row")
            } else if no_contact {
                ("no_contact", "no usable email or phone")
            } else {
                ("missed", facts.miss_detail)
            };
            (outcome.to_string(), Some(detail.to_string()))
        }
    };
    Ok(Miss {
        booking_id: r.try_get(0)?,
        cal_uid: r.try_get(1)?,
        stage: facts.name,
        outcome,
        channel: r.try_get(4)?,
        detail,
    })
}

/// What became of the SMS of one stage that Twilio accepted (`sent`) in a period, by the
/// status its callbacks reported.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct SmsFate {
    pub stage: String,
    pub delivered: i64,
    /// Final without delivery: undelivered, failed or canceled.
    pub undelivered: i64,
    /// No final status yet although sent more than an hour before `now`.
    pub unconfirmed: i64,
}

/// The `FROM` and `WHERE` of the SMS sent in `[$1, $2]`.
const SENT_SMS: &str = "FROM journey_deliveries
                 WHERE channel = 'sms' AND status = 'sent'
                   AND sent_at BETWEEN $1::timestamptz AND $2::timestamptz";

/// Runs the query `sql` builds from the SQL rank of `provider_status` (4 = final), with
/// `since` and `now` as `$1` and `$2`; `what` is the error's context.
async fn sent_sms(
    db: &Db,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    sql: impl FnOnce(&str) -> String,
    what: &'static str,
) -> anyhow::Result<Vec<tokio_postgres::Row>> {
    let rank = crate::domain::SmsStatus::sql_rank("provider_status");
    db.client()
        .await?
        .query(&sql(&rank), &[&since, &now])
        .await
        .context(what)
}

/// [`SmsFate`] per stage for SMS sent in `[since, now]`.
pub(crate) async fn sms_fates(
    db: &Db,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<SmsFate>> {
    let rows = sent_sms(
        db,
        since,
        now,
        |rank| {
            format!(
                "SELECT stage,
                        count(*) FILTER (WHERE provider_status = 'delivered'),
                        count(*) FILTER (WHERE {rank} = 4 AND provider_status <> 'delivered'),
                        count(*) FILTER (WHERE {rank} < 4
                                           AND sent_at < $2::timestamptz - interval '1 hour')
                 {SENT_SMS}
                 GROUP BY stage ORDER BY stage"
            )
        },
        "Failed to count SMS by delivery status",
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SmsFate {
                stage: r.try_get(0)?,
                delivered: r.try_get(1)?,
                undelivered: r.try_get(2)?,
                unconfirmed: r.try_get(3)?,
            })
        })
        .collect()
}

/// An SMS Twilio accepted but could not deliver, with its error code.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct UndeliveredSms {
    pub delivery_id: Uuid,
    pub booking_id: Uuid,
    pub stage: String,
    pub provider_status: String,
    pub error_code: Option<String>,
    pub recipient: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// SMS sent in `[since, now]` whose final status is not `delivered`.
pub(crate) async fn undelivered_sms(
    db: &Db,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<UndeliveredSms>> {
    let rows = sent_sms(
        db,
        since,
        now,
        |rank| {
            format!(
                "SELECT id, booking_id, stage, provider_status, provider_error_code,
                        recipient_masked, sent_at
                 {SENT_SMS}
                   AND {rank} = 4 AND provider_status <> 'delivered'
                 ORDER BY sent_at, id"
            )
        },
        "Failed to read undelivered SMS",
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(UndeliveredSms {
                delivery_id: r.try_get(0)?,
                booking_id: r.try_get(1)?,
                stage: r.try_get(2)?,
                provider_status: r.try_get(3)?,
                error_code: r.try_get(4)?,
                recipient: r.try_get(5)?,
                sent_at: r.try_get(6)?,
            })
        })
        .collect()
}
