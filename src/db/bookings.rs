//! Reading what a stage needs: the due bookings with their therapist and stage facts (one
//! query), then their patients (a second query). A stage never queries per booking.
//!
//! Patients are loaded separately on purpose: when that lookup fails (a renamed column, a
//! permission), the driver counts every affected booking as an error with its id, instead of
//! the whole selection failing anonymously or, worse, looking like "no patient".

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Db;
use crate::domain::{Anchor, BookingStatus, RowFacts, Stage, StageFacts, StatusRule};

/// Bookings that will take place: see [`BookingStatus::is_active`]. PENDING is not
/// active: the host has not accepted, so nobody is confirmed, notified or reminded yet.
fn active(alias: &str) -> String {
    BookingStatus::sql_is_active(alias)
}

/// [`active`] for a status read from a row; text that names no known status is not active.
pub fn is_active_status(status: Option<&str>) -> bool {
    match status.map(BookingStatus::parse) {
        None => true,
        Some(Ok(s)) => BookingStatus::is_active(Some(s)),
        Some(Err(_)) => false,
    }
}

#[derive(Clone, Debug)]
pub struct TherapistInfo {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub cal_username: Option<String>,
}

impl TherapistInfo {
    pub fn display_name(&self) -> Option<String> {
        let name = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        (!name.is_empty()).then_some(name)
    }
}

/// One booking a stage selected, with what its rules need to decide.
#[derive(Clone, Debug)]
pub struct DueBooking {
    pub id: Uuid,
    pub cal_uid: String,
    pub status: Option<String>,
    pub is_test: bool,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub booking_kind: Option<String>,
    pub video_url: Option<String>,
    pub location: Option<String>,
    pub ical_sequence: Option<i32>,
    pub patient_id: Option<Uuid>,
    pub therapist_id: Option<Uuid>,
    pub match_id: Option<Uuid>,
    pub request_reschedule: bool,
    pub rescheduled_from_uid: Option<String>,
    pub client_confirmation_sent_at: Option<DateTime<Utc>>,
    pub therapist_notification_sent_at: Option<DateTime<Utc>>,
    /// The stage's own mark column.
    pub stage_mark: Option<DateTime<Utc>>,
    pub therapist: Option<TherapistInfo>,
    /// Followups: another future, active booking of this patient with this therapist.
    pub future_full_with_therapist: bool,
    pub future_any_with_therapist: bool,
    /// Cancellation recovery: the patient has another successful booking with anyone: an
    /// active one still ahead, or a session that took place (COMPLETED, or active and ended).
    pub has_successful_booking: bool,
    /// Cancellation recovery: distinct other therapists this patient was matched with.
    pub other_matched_therapists: i64,
    /// Cancellation recovery: a recovery email to this patient in the last 72 hours.
    pub recently_recovered: bool,
    pub full_slots_count: Option<i32>,
    pub next_full_time: Option<DateTime<Utc>>,
    pub slots_cached_at: Option<DateTime<Utc>>,
    /// The match page to link: the booking's match, else the patient's newest.
    pub match_secure_uuid: Option<Uuid>,
    /// Calendar UID of the invite (carried over across reschedules); `cal_uid` when unset.
    pub ical_uid: Option<String>,
    /// The first attendee as the payload named them (walk-in bookings have no people row).
    pub attendee_email: Option<String>,
    pub attendee_name: Option<String>,
    pub attendee_phone: Option<String>,
}

/// A patient as the stages see it. Contact fields are raw; the stage parses them.
#[derive(Clone)]
pub struct PatientRow {
    /// `None` for a walk-in attendee (see [`PatientRow::attendee_of`]).
    pub id: Option<Uuid>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone_number: Option<String>,
    pub is_test: bool,
}

impl PatientRow {
    /// The attendee of a booking without a patient row, as the payload named them (they
    /// booked on Cal.com directly): `None` when the booking has a patient or no contact.
    pub fn attendee_of(b: &DueBooking) -> Option<PatientRow> {
        if b.patient_id.is_some() || (b.attendee_email.is_none() && b.attendee_phone.is_none()) {
            return None;
        }
        Some(PatientRow {
            id: None,
            name: b.attendee_name.clone(),
            email: b.attendee_email.clone(),
            phone_number: b.attendee_phone.clone(),
            is_test: false,
        })
    }
}

impl std::fmt::Debug for PatientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientRow")
            .field("id", &self.id)
            .field("is_test", &self.is_test)
            .finish_non_exhaustive()
    }
}

/// The selection of a stage over the booking alias `a`, without [`has_work`]: its booking
/// kind, the sides not yet marked (a stage with two mark columns), the window on its anchor
/// (bounds `$2..=$3`, the run's instant `$1`), the therapist and the statuses. Names and kinds
/// come from the stage's facts as literals, never from data, so the partial indexes of
/// `V6__speed.sql` match; times are bound parameters.
fn stage_window(facts: &StageFacts, a: &str) -> String {
    let sel = &facts.selection;
    let mut terms = Vec::new();
    if let Some(kind) = sel.booking_kind {
        terms.push(format!("{a}.booking_kind = '{}'", kind.as_str()));
    }
    if let Some(therapist_mark) = facts.therapist_mark_column {
        let mark = facts.mark_column;
        terms.push(format!(
            "({a}.{mark} IS NULL OR {a}.{therapist_mark} IS NULL)"
        ));
    }
    terms.push(anchor_window(sel.anchor, a));
    if sel.needs_therapist {
        terms.push(format!("{a}.therapist_id IS NOT NULL"));
    }
    terms.push(statuses(sel.statuses, a));
    terms.join(" AND ")
}

/// The window on the stage's anchor.
fn anchor_window(anchor: Anchor, a: &str) -> String {
    match anchor {
        // No look-back on created_at: any unconfirmed booking whose session is still ahead is
        // caught. Only the window's end applies ("created more than 10 minutes ago": the
        // webhook may still be sending).
        Anchor::CreatedWhileSessionAhead => {
            format!("{a}.start_time > $1 AND {a}.created_at <= $3 AND $2 IS NOT NULL")
        }
        Anchor::StartTime => format!("{a}.start_time BETWEEN $2 AND $3"),
        Anchor::EndTime => format!("{a}.end_time BETWEEN $2 AND $3"),
        Anchor::CancelledAt => {
            format!("{a}.cancelled_at IS NOT NULL AND {a}.cancelled_at BETWEEN $2 AND $3")
        }
    }
}

/// The statuses a stage is due for, over the booking alias `a`.
pub(crate) fn statuses(rule: StatusRule, a: &str) -> String {
    match rule {
        StatusRule::Active => active(a),
        StatusRule::NotFellThrough => BookingStatus::sql_not_fell_through(a),
        StatusRule::Cancelled => BookingStatus::Cancelled.sql_is(a),
    }
}

/// The booking column a stage's window is placed on, over the alias `a`.
pub(crate) fn anchor_column(anchor: Anchor, a: &str) -> String {
    let column = match anchor {
        Anchor::CreatedWhileSessionAhead => "created_at",
        Anchor::StartTime => "start_time",
        Anchor::EndTime => "end_time",
        Anchor::CancelledAt => "cancelled_at",
    };
    format!("{a}.{column}")
}

/// Whether a booking still has work for a stage, so handled bookings never fill `--limit`:
/// a `retry` row of the stage (a channel that failed is tried again on its own, even when the
/// other channel went out and set the mark), or the stage not yet done for a recipient (mark
/// not set) and not already decided in the ledger (sent, failed, skipped for a recorded
/// reason, in doubt, or being sent by another run). Skips that a later run must re-evaluate
/// (no free slots) are not recorded, so those bookings stay selected.
pub fn has_work(stage: Stage) -> String {
    let facts = stage.facts();
    format!("({} OR {})", retry_of(facts, "b"), undecided_of(facts, "b"))
}

/// A `retry` row of the stage for booking `a`.
fn retry_of(facts: &StageFacts, a: &str) -> String {
    ledger_rows(facts, a, &format!("w.status = 'retry' AND {}", HELD_DUE))
}

/// A `retry` row held by quiet hours (`not_before` ahead) is decided until its time comes.
const HELD_DUE: &str = "(w.not_before IS NULL OR w.not_before <= $1)";

fn ledger_rows(facts: &StageFacts, a: &str, filter: &str) -> String {
    let ledger = facts.ledger_stage;
    format!(
        "EXISTS (SELECT 1 FROM journey_deliveries w WHERE w.booking_id = {a}.id \
         AND w.stage = '{ledger}' AND {filter})"
    )
}

/// The stage not yet done for a recipient of booking `a`: its mark is NULL and the ledger has
/// decided nothing for it. Every arm starts with a mark being NULL, so the partial indexes of
/// `V6__speed.sql` serve it and bookings already handled are not read.
fn undecided_of(facts: &StageFacts, a: &str) -> String {
    let undecided = |mark: &str, roles: &str| {
        format!(
            "({a}.{mark} IS NULL AND NOT {})",
            ledger_rows(
                facts,
                a,
                &format!(
                    "(w.status <> 'retry' OR w.not_before > $1) AND w.recipient_role IN ({roles})"
                )
            )
        )
    };
    match facts.therapist_mark_column {
        // Two recipients, each with its own mark. A test booking's one QA email carries both
        // (see `stages::confirmation_recovery`), so a `qa` row decides both sides.
        Some(therapist_mark) => format!(
            "({} OR {})",
            undecided(facts.mark_column, "'patient', 'qa'"),
            undecided(therapist_mark, "'therapist', 'qa'"),
        ),
        None => undecided(facts.mark_column, "'patient', 'therapist', 'qa'"),
    }
}

/// How many bookings a stage selects and delivers at a time: memory stays bounded whatever
/// the number due, and each chunk's claims and outcomes are one statement each.
pub const PAGE: i64 = 500;

/// When a booking's window for a stage has closed for good, as a predicate over `b`
/// (`$1` the run's instant, `$2` the window's earlier edge): no run with this window selects
/// it again. A stage without look-back closes when the session starts.
pub fn window_closed(stage: Stage) -> String {
    match stage.facts().selection.anchor {
        Anchor::CreatedWhileSessionAhead => "b.start_time <= $1::timestamptz".to_string(),
        other => format!("{} < $2::timestamptz", anchor_column(other, "b")),
    }
}

/// The selection query of a stage (its first page); public so tests can EXPLAIN it.
/// Parameters: `$1` the run's instant, `$2..$3` the window, `$4` the limit.
pub fn due_query(stage: Stage) -> String {
    let facts = stage.facts();
    query_with(facts, &page_predicate(facts, false))
}

/// The query of a page after a keyset cursor: `$5` the last booking's id, `$6` its value of
/// the stage's order column.
fn due_page_query(facts: &StageFacts) -> String {
    query_with(facts, &page_predicate(facts, true))
}

/// The bookings of a page, found as the union of two ordered, limited index scans: bookings
/// the stage has not done yet (the stage's mark is NULL: a partial index of `V6__speed.sql`),
/// and bookings with a `retry` row of the stage (through the ledger's partial index on retry
/// rows). Each arm yields its own first `$4` rows after the cursor, so the first `$4` of their
/// union are exactly the first `$4` of all due bookings; rows already handled are not read.
fn page_predicate(facts: &StageFacts, after_cursor: bool) -> String {
    let key = anchor_column(facts.selection.anchor, "c");
    let window = stage_window(facts, "c");
    // A stage with two marks selects on "either is NULL", in its window.
    let mark_null = match facts.therapist_mark_column {
        Some(_) => String::new(),
        None => format!("c.{} IS NULL AND ", facts.mark_column),
    };
    // A row comparison, so the index scan starts right after the cursor even among many
    // bookings with the same key. Only after a cursor: on the first page PostgreSQL would
    // start the scan at a `-infinity` cursor rather than at the window's edge.
    let after = if after_cursor {
        format!("({key}, c.id) > ($6::timestamptz, $5)")
    } else {
        "true".to_string()
    };
    format!(
        "b.id IN (
           (SELECT c.id FROM cal_bookings c
             WHERE {mark_null}{window} AND {undecided} AND {after}
             ORDER BY {key}, c.id LIMIT $4)
           UNION
           (SELECT c.id FROM cal_bookings c
             WHERE c.id IN (SELECT w.booking_id FROM journey_deliveries w
                             WHERE w.stage = '{ledger}' AND w.status = 'retry' AND {HELD_DUE})
               AND {window} AND {after}
             ORDER BY {key}, c.id LIMIT $4){held})",
        held = held_arm(facts, &key, &after),
        undecided = undecided_of(facts, "c"),
        ledger = facts.ledger_stage,
    )
}

/// Stages that send SMS: SMS held by quiet hours whose time has come, even once the booking
/// has left the window (a 1 h reminder for 08:30 goes at 08:00), while the session is still
/// ahead; `ledger::expire_closed` ends those that come too late. A third ordered, limited arm.
fn held_arm(facts: &StageFacts, key: &str, after: &str) -> String {
    if !facts.sends_sms() {
        return String::new();
    }
    format!(
        "
           UNION
           (SELECT c.id FROM cal_bookings c
             WHERE c.id IN (SELECT w.booking_id FROM journey_deliveries w
                             WHERE w.stage = '{ledger}' AND w.status = 'retry'
                               AND w.not_before IS NOT NULL AND w.not_before <= $1)
               AND c.start_time > $1 AND {active} AND {after}
             ORDER BY {key}, c.id LIMIT $4)",
        ledger = facts.ledger_stage,
        active = active("c"),
    )
}

/// The facts about the patient's other bookings and matches the stage's rules need, as the
/// columns `future_full, future_any, other_future, other_matched, recently_recovered` (false
/// and 0 where the stage does not need them).
fn row_facts(facts: &StageFacts) -> [String; 5] {
    let off = || ["false", "false", "false", "0", "false"].map(String::from);
    match facts.selection.row_facts {
        RowFacts::None => off(),
        RowFacts::RebookedWithTherapist => {
            let mut out = off();
            out[0] = future_with_therapist("AND o.booking_kind = 'full_session'");
            out[1] = future_with_therapist("");
            out
        }
        RowFacts::RecoveryHistory => [
            "false".to_string(),
            "false".to_string(),
            format!(
                "EXISTS (SELECT 1 FROM cal_bookings o WHERE o.patient_id = b.patient_id \
                 AND o.id <> b.id AND ({completed} \
                 OR ({other_active} AND (o.start_time > $1 OR o.end_time < $1))))",
                completed = BookingStatus::Completed.sql_is("o"),
                other_active = active("o"),
            ),
            "(SELECT count(DISTINCT om.therapist_id) FROM matches om \
              WHERE om.patient_id = b.patient_id AND om.therapist_id IS NOT NULL \
              AND om.therapist_id IS DISTINCT FROM b.therapist_id \
              AND coalesce(lower(om.status), '') NOT IN ('declined', 'failed', 'rejected'))"
                .to_string(),
            recently_sent(facts),
        ],
    }
}

/// Another future, active booking of this patient with this therapist (of a kind).
fn future_with_therapist(kind_filter: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM cal_bookings o WHERE o.patient_id = b.patient_id \
         AND o.therapist_id = b.therapist_id AND o.id <> b.id AND o.start_time > $1 \
         {kind_filter} AND {})",
        active("o")
    )
}

/// A message of this stage to the patient, for another booking, inside the stage's
/// per-patient period, or one being sent or in doubt (`false` for a stage without a period).
fn recently_sent(facts: &StageFacts) -> String {
    let Some(period) = facts.patient_exclusive_period else {
        return "false".to_string();
    };
    format!(
        "EXISTS (SELECT 1 FROM journey_deliveries d WHERE d.patient_id = b.patient_id \
     AND d.stage = '{ledger}' AND d.booking_id <> b.id \
     AND ((d.status = 'sent' AND d.sent_at > $1 - interval '{hours} hours') \
          OR d.status IN ('sending', 'in_doubt')))",
        ledger = facts.ledger_stage,
        hours = period.num_hours(),
    )
}

/// The selection query with another predicate; parameters are typed explicitly, since not
/// every stage's query uses all of them.
fn query_with(facts: &StageFacts, predicate: &str) -> String {
    let [future_full, future_any, other_future, other_matched, recent] = row_facts(facts);
    format!(
        "SELECT b.id, b.cal_uid, b.status, coalesce(b.is_test, false), b.start_time, b.end_time,
                b.booking_kind, b.video_url, b.location, b.ical_sequence, b.patient_id,
                b.therapist_id, b.match_id, coalesce(b.request_reschedule, false),
                b.rescheduled_from_uid, b.client_confirmation_sent_at,
                b.therapist_notification_sent_at, b.{mark},
                t.id IS NOT NULL, t.first_name, t.last_name, t.email, t.cal_username,
                {future_full} AS future_full,
                {future_any} AS future_any,
                {other_future} AS other_future,
                {other_matched}::bigint AS other_matched,
                {recent} AS recently_recovered,
                s.full_slots_count, s.next_full_time_utc, s.cached_at,
                coalesce(m.secure_uuid,
                         (SELECT pm.secure_uuid FROM matches pm WHERE pm.patient_id = b.patient_id
                          ORDER BY pm.created_at DESC NULLS LAST LIMIT 1)) AS match_secure_uuid,
                b.ical_uid, b.attendee_email, b.attendee_name, b.attendee_phone,
                {order} AS page_key
         FROM cal_bookings b
         LEFT JOIN therapists t ON t.id = b.therapist_id
         LEFT JOIN cal_slots_cache s ON s.therapist_id = b.therapist_id
         LEFT JOIN matches m ON m.id = b.match_id
         WHERE $1 IS NOT NULL AND {predicate}
         ORDER BY {order}, b.id
         LIMIT $4",
        mark = facts.mark_column,
        order = anchor_column(facts.selection.anchor, "b"),
    )
    .replace("$1", "$1::timestamptz")
    .replace("$2", "$2::timestamptz")
    .replace("$3", "$3::timestamptz")
    .replace("$4", "$4::bigint")
    .replace("$5", "$5::uuid")
}

/// One page of the bookings a stage must look at, as of `now`, within `[from, to]` on the
/// stage's anchor column, after the keyset cursor `after` (the last booking of the previous
/// page: its order key and id), at most `limit`. One round trip on the run's connection.
pub async fn select_due_page(
    client: &deadpool_postgres::ClientWrapper,
    facts: &StageFacts,
    now: DateTime<Utc>,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> anyhow::Result<(Vec<DueBooking>, Option<(DateTime<Utc>, Uuid)>)> {
    use tokio_postgres::types::Type;
    let stage = facts.name;
    // One round trip, planned for this page's values (nothing prepared beforehand).
    let window = [
        (
            &now as &(dyn tokio_postgres::types::ToSql + Sync),
            Type::TIMESTAMPTZ,
        ),
        (&from, Type::TIMESTAMPTZ),
        (&to, Type::TIMESTAMPTZ),
        (&limit, Type::INT8),
    ];
    let rows = match &after {
        None => {
            let sql = query_with(facts, &page_predicate(facts, false));
            client.query_typed(&sql, &window).await
        }
        Some((key, id)) => {
            let mut params = window.to_vec();
            params.push((id, Type::UUID));
            params.push((key, Type::TIMESTAMPTZ));
            client.query_typed(&due_page_query(facts), &params).await
        }
    }
    .with_context(|| format!("Failed to select due bookings for {stage}"))?;
    let next = match rows.last() {
        Some(r) => Some((r.try_get::<_, DateTime<Utc>>(36)?, r.try_get::<_, Uuid>(0)?)),
        None => None,
    };
    let due = rows
        .iter()
        .map(map_row)
        .collect::<anyhow::Result<Vec<_>>>()
        .with_context(|| format!("Failed to read due bookings for {stage}"))?;
    Ok((due, next))
}

fn map_row(r: &tokio_postgres::Row) -> anyhow::Result<DueBooking> {
    let has_therapist: bool = r.try_get(18)?;
    Ok(DueBooking {
        id: r.try_get(0)?,
        cal_uid: r.try_get(1)?,
        status: r.try_get(2)?,
        is_test: r.try_get(3)?,
        start_time: r.try_get(4)?,
        end_time: r.try_get(5)?,
        booking_kind: r.try_get(6)?,
        video_url: r.try_get(7)?,
        location: r.try_get(8)?,
        ical_sequence: r.try_get(9)?,
        patient_id: r.try_get(10)?,
        therapist_id: r.try_get(11)?,
        match_id: r.try_get(12)?,
        request_reschedule: r.try_get(13)?,
        rescheduled_from_uid: r.try_get(14)?,
        client_confirmation_sent_at: r.try_get(15)?,
        therapist_notification_sent_at: r.try_get(16)?,
        stage_mark: r.try_get(17)?,
        therapist: if has_therapist {
            Some(TherapistInfo {
                first_name: r.try_get(19)?,
                last_name: r.try_get(20)?,
                email: r.try_get(21)?,
                cal_username: r.try_get(22)?,
            })
        } else {
            None
        },
        future_full_with_therapist: r.try_get(23)?,
        future_any_with_therapist: r.try_get(24)?,
        has_successful_booking: r.try_get(25)?,
        other_matched_therapists: r.try_get(26)?,
        recently_recovered: r.try_get(27)?,
        full_slots_count: r.try_get(28)?,
        next_full_time: r.try_get(29)?,
        slots_cached_at: r.try_get(30)?,
        match_secure_uuid: r.try_get(31)?,
        ical_uid: r.try_get(32)?,
        attendee_email: r.try_get(33)?,
        attendee_name: r.try_get(34)?,
        attendee_phone: r.try_get(35)?,
    })
}

/// Bookings by id, with the same facts as confirmation recovery sees (the webhook's
/// confirmations, any number of bookings in one round trip, planned for these ids). Ids with
/// no booking are left out; the order is the stage's (created, id).
pub async fn select_many(
    db: &Db,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<DueBooking>> {
    use tokio_postgres::types::Type;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // $2..$4 (the window and the limit) are unused here; their types are given below.
    // `query_with` casts `$5` to a uuid (a page's cursor); here it is the array of ids.
    let sql = query_with(Stage::ConfirmationRecovery.facts(), "b.id = ANY($5)")
        .replace("ANY($5::uuid)", "ANY($5::uuid[])");
    let limit = ids.len() as i64;
    let client = db.client().await?;
    let rows = client
        .query_typed(
            &sql,
            &[
                (&now, Type::TIMESTAMPTZ),
                (&now, Type::TIMESTAMPTZ),
                (&now, Type::TIMESTAMPTZ),
                (&limit, Type::INT8),
                (&ids, Type::UUID_ARRAY),
            ],
        )
        .await
        .with_context(|| format!("Failed to load {} booking(s) to confirm", ids.len()))?;
    rows.iter().map(map_row).collect()
}

/// One booking by id ([`select_many`] of one). `None` when no such booking exists.
pub async fn select_one(
    db: &Db,
    id: Uuid,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<DueBooking>> {
    Ok(select_many(db, &[id], now).await?.into_iter().next())
}

/// Links every walk-in booking (no patient row, an attendee email) to the newest `people` row
/// with that email, compared case-insensitively, once one exists. One statement for all of
/// them (a stage runs it before selecting; a run of several stages once, in `db::tidy`);
/// returns how many bookings were linked. One round trip (no parameters).
pub async fn link_walk_ins_on(client: &deadpool_postgres::ClientWrapper) -> anyhow::Result<u64> {
    super::ledger::count_typed(
        client,
        &format!("WITH linked AS ({LINK_WALK_INS}) SELECT count(*) FROM linked"),
        &[],
    )
    .await
    .context("Failed to link walk-in bookings to their people rows")
}

/// A walk-in booking `b` whose person now exists: what [`LINK_WALK_INS`] links and what
/// [`survey`] looks for (a macro, so both constants are built from the one text).
macro_rules! linkable_walk_in {
    () => {
        "b.patient_id IS NULL AND b.attendee_email IS NOT NULL
              AND EXISTS (SELECT 1 FROM people pp
                           WHERE lower(pp.email) = lower(b.attendee_email))"
    };
}

/// The statement of [`link_walk_ins_on`]: one row per linked booking.
pub(crate) const LINK_WALK_INS: &str = concat!(
    "UPDATE cal_bookings b
              SET patient_id = (SELECT pp.id FROM people pp
                                 WHERE lower(pp.email) = lower(b.attendee_email)
                                 ORDER BY pp.created_at DESC NULLS LAST, pp.id LIMIT 1),
                  updated_at = now()
            WHERE ",
    linkable_walk_in!(),
    "
            RETURNING 1"
);

/// What a run finds before its stages select ([`survey`]).
#[derive(Debug)]
pub struct Survey {
    /// Per stage, in the order asked: whether its selection may find a booking.
    pub due: Vec<bool>,
    /// Whether tidying may change anything: a claim in `sending` or a `retry` row of one of
    /// the stages, or a walk-in booking whose person now exists.
    pub tidy: bool,
}

/// Whether each stage's selection may find a booking in its window, and whether the run has
/// anything to tidy, all in one statement planned in about a millisecond (`$1` the run's
/// instant, `$2` the stages' ledger names; per stage its window's edges). Per stage: a
/// booking in its window whose mark is not set (through the selection's own partial index),
/// or any `retry` row of the stage (then the stage selects and its own arms decide). `false`
/// means the selection would return nothing: a run with nothing due plans no selection, and
/// one with nothing to tidy plans no tidying. A stage may be answered `true` and then select
/// nothing; never the other way round.
pub async fn survey(
    client: &deadpool_postgres::ClientWrapper,
    now: DateTime<Utc>,
    windows: &[(&StageFacts, DateTime<Utc>, DateTime<Utc>)],
) -> anyhow::Result<Survey> {
    use tokio_postgres::types::{ToSql, Type};
    if windows.is_empty() {
        return Ok(Survey {
            due: Vec::new(),
            tidy: false,
        });
    }
    let ledgers: Vec<&str> = windows
        .iter()
        .map(|(f, _, _)| f.ledger_stage.as_str())
        .collect();
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> =
        vec![(&now, Type::TIMESTAMPTZ), (&ledgers, Type::TEXT_ARRAY)];
    let mut exists = Vec::new();
    for (i, (facts, from, to)) in windows.iter().enumerate() {
        let (p_from, p_to) = (3 + 2 * i, 4 + 2 * i);
        let predicate = super::renumber(&undone_predicate(facts), &[(2, p_from), (3, p_to)]);
        exists.push(format!(
            "EXISTS (SELECT 1 FROM cal_bookings c WHERE {predicate})"
        ));
        params.push((from, Type::TIMESTAMPTZ));
        params.push((to, Type::TIMESTAMPTZ));
    }
    let sql = format!(
        "SELECT ARRAY[{exists}],
                ARRAY(SELECT s FROM unnest($2::text[]) s
                       WHERE EXISTS (SELECT 1 FROM journey_deliveries w
                                      WHERE w.stage = s AND w.status = 'retry')),
                EXISTS (SELECT 1 FROM journey_deliveries w
                         WHERE w.status = 'sending' AND w.stage = ANY($2::text[]))
                OR EXISTS (SELECT 1 FROM cal_bookings b WHERE {walk_in})",
        exists = exists.join(",\n"),
        walk_in = linkable_walk_in!(),
    );
    let row = client
        .query_typed_one(&sql, &params)
        .await
        .context("Failed to look for due bookings")?;
    let undone: Vec<bool> = row.try_get(0)?;
    let retrying: Vec<String> = row.try_get(1)?;
    let has_retry: Vec<bool> = ledgers
        .iter()
        .map(|l| retrying.iter().any(|r| r == l))
        .collect();
    Ok(Survey {
        due: undone
            .iter()
            .zip(&has_retry)
            .map(|(u, r)| *u || *r)
            .collect(),
        tidy: row.try_get(2)? || !retrying.is_empty(),
    })
}

/// The first arm of [`page_predicate`] as a condition on `c`, unordered and without its look
/// into the ledger: a booking in the stage's window whose mark is not set (`$1` now, `$2`/`$3`
/// the window). A superset of the arm (a booking the ledger already decided is answered `true`
/// and then not selected), planned without a second table: a fresh connection plans it in
/// about a millisecond.
fn undone_predicate(facts: &StageFacts) -> String {
    let mark_null = match facts.therapist_mark_column {
        Some(_) => String::new(),
        None => format!("c.{} IS NULL AND ", facts.mark_column),
    };
    format!("{mark_null}{}", stage_window(facts, "c"))
}

/// The patients of the given ids. A database error is returned as such, never as "missing".
pub async fn load_patients(db: &Db, ids: &[Uuid]) -> anyhow::Result<HashMap<Uuid, PatientRow>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT id, name, email, phone_number,
                    coalesce(metadata->>'is_test', '') = 'true'
             FROM people WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .context("Failed to load patients")?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                PatientRow {
                    id: Some(r.try_get(0)?),
                    name: r.try_get(1)?,
                    email: r.try_get(2)?,
                    phone_number: r.try_get(3)?,
                    is_test: r.try_get(4)?,
                },
            ))
        })
        .collect::<anyhow::Result<HashMap<_, _>>>()
        .context("Failed to read patients")
}
