//! The SQL of `journeyctl demo`: creating its own database, seeding the simulated week's
//! therapists, people, matches and slot cache, the booking site's hourly slot refresh, and the
//! reads behind its closing timeline and totals.
//!
//! Only the demo calls these, and only on a database it created itself.

use anyhow::Context;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Db;
use crate::domain::{Channel, DeliveryStatus, RecipientRole};

/// A therapist row of the demo's seed.
pub(crate) struct NewTherapist<'a> {
    pub id: Uuid,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: String,
    pub cal_username: &'a str,
    pub intro_event_type_id: i32,
    pub full_session_event_type_id: i32,
    /// Free full-session slots the booking site's cache shows.
    pub free_slots: i32,
    /// The next free slot, when there is one.
    pub next_free_slot: Option<DateTime<Utc>>,
}

/// A person (patient) row of the demo's seed.
pub(crate) struct NewPerson<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
}

/// Everything the demo seeds before its first webhook.
pub(crate) struct Seed<'a> {
    pub therapists: Vec<NewTherapist<'a>>,
    pub people: Vec<NewPerson<'a>>,
    /// Proposed matches: (patient, therapist).
    pub matches: Vec<(Uuid, Uuid)>,
    /// When people and matches were created.
    pub created_at: DateTime<Utc>,
    /// When the slot cache was last refreshed.
    pub slots_cached_at: DateTime<Utc>,
}

/// `CREATE DATABASE name` on the server `admin` is connected to. `name` is made by the demo
/// (letters, digits, underscores), never taken from input.
pub(crate) async fn create_database(admin: &Db, name: &str) -> anyhow::Result<()> {
    admin
        .client()
        .await?
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("Failed to create the demo database {name}"))
}

/// Inserts the seed: therapists, people, their matches, and the slot cache.
pub(crate) async fn seed(db: &Db, seed: &Seed<'_>) -> anyhow::Result<()> {
    let c = db.client().await?;
    for t in &seed.therapists {
        c.execute(
            "INSERT INTO therapists (id, first_name, last_name, email, cal_username,
                                     cal_intro_event_type_id, cal_full_session_event_type_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &t.id,
                &t.first_name,
                &t.last_name,
                &t.email,
                &t.cal_username,
                &t.intro_event_type_id,
                &t.full_session_event_type_id,
            ],
        )
        .await
        .context("Failed to seed the demo's therapists")?;
    }
    for p in &seed.people {
        c.execute(
            "INSERT INTO people (id, name, email, phone_number, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&p.id, &p.name, &p.email, &p.phone, &seed.created_at],
        )
        .await
        .context("Failed to seed the demo's people")?;
    }
    for (patient, therapist) in &seed.matches {
        c.execute(
            "INSERT INTO matches (patient_id, therapist_id, status, created_at) VALUES ($1, $2, 'proposed', $3)",
            &[patient, therapist, &seed.created_at],
        )
        .await
        .context("Failed to seed the demo's matches")?;
    }
    for t in &seed.therapists {
        c.execute(
            "INSERT INTO cal_slots_cache (therapist_id, full_slots_count, next_full_time_utc, cached_at)
             VALUES ($1, $2, $3, $4)",
            &[&t.id, &t.free_slots, &t.next_free_slot, &seed.slots_cached_at],
        )
        .await
        .context("Failed to seed the demo's slot cache")?;
    }
    Ok(())
}

/// What the booking site's hourly refresh does: therapists with free slots show the day after
/// tomorrow at 09:00 (UTC) as their next one, cached at `now`.
pub(crate) async fn refresh_slot_cache(db: &Db, now: DateTime<Utc>) -> anyhow::Result<()> {
    db.client()
        .await?
        .execute(
            "UPDATE cal_slots_cache SET cached_at = $1,
                    next_full_time_utc = date_trunc('day', $1::timestamptz) + interval '2 days 9 hours'
              WHERE full_slots_count > 0",
            &[&now],
        )
        .await
        .context("Failed to refresh the demo's slot cache")?;
    Ok(())
}

/// One line of the demo's closing timeline: a ledger row with its booking and recipient.
pub(crate) struct TimelineRow {
    pub sent_at: Option<DateTime<Utc>>,
    /// The ledger's stage name, as stored.
    pub stage: String,
    pub channel: Channel,
    pub role: RecipientRole,
    pub status: DeliveryStatus,
    pub last_error: Option<String>,
    pub cal_uid: String,
    pub start: Option<DateTime<Utc>>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// First and last name.
    pub therapist: Option<String>,
}

/// Every ledger row, in the order it happened.
pub(crate) async fn timeline(db: &Db) -> anyhow::Result<Vec<TimelineRow>> {
    let rows = db
        .client()
        .await?
        .query(
            "SELECT d.sent_at, d.stage, d.channel, d.recipient_role, d.status, d.last_error,
                    b.cal_uid, b.start_time, p.name, p.email, p.phone_number,
                    t.first_name || ' ' || t.last_name
             FROM journey_deliveries d
             JOIN cal_bookings b ON b.id = d.booking_id
             LEFT JOIN people p ON p.id = b.patient_id
             LEFT JOIN therapists t ON t.id = b.therapist_id
             ORDER BY coalesce(d.sent_at, d.created_at), d.stage, d.channel",
            &[],
        )
        .await
        .context("Failed to read the timeline")?;
    rows.iter()
        .map(|r| {
            Ok(TimelineRow {
                sent_at: r.try_get(0)?,
                stage: r.try_get(1)?,
                channel: channel(r.try_get(2)?)?,
                role: role(r.try_get(3)?)?,
                status: status(r.try_get(4)?)?,
                last_error: r.try_get(5)?,
                cal_uid: r.try_get(6)?,
                start: r.try_get(7)?,
                name: r.try_get(8)?,
                email: r.try_get(9)?,
                phone: r.try_get(10)?,
                therapist: r.try_get(11)?,
            })
        })
        .collect()
}

/// Ledger rows counted by channel and status, ordered by their database text.
pub(crate) async fn ledger_counts(db: &Db) -> anyhow::Result<Vec<(Channel, DeliveryStatus, i64)>> {
    let rows = db
        .client()
        .await?
        .query(
            "SELECT channel, status, count(*) FROM journey_deliveries GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .context("Failed to count the demo's ledger")?;
    rows.iter()
        .map(|r| {
            Ok((
                channel(r.try_get(0)?)?,
                status(r.try_get(1)?)?,
                r.try_get(2)?,
            ))
        })
        .collect()
}

/// How many runs `command` recorded.
pub(crate) async fn count_runs(db: &Db, command: &str) -> anyhow::Result<i64> {
    let row = db
        .client()
        .await?
        .query_one(
            "SELECT count(*) FROM journey_runs WHERE command = $1",
            &[&command],
        )
        .await
        .with_context(|| format!("Failed to count the {command} runs"))?;
    Ok(row.try_get(0)?)
}

fn channel(s: &str) -> anyhow::Result<Channel> {
    Channel::parse(s).with_context(|| format!("journey_deliveries holds an unknown channel {s:?}"))
}

fn role(s: &str) -> anyhow::Result<RecipientRole> {
    RecipientRole::parse(s)
        .with_context(|| format!("journey_deliveries holds an unknown role {s:?}"))
}

fn status(s: &str) -> anyhow::Result<DeliveryStatus> {
    DeliveryStatus::parse(s)
        .with_context(|| format!("journey_deliveries holds an unknown status {s:?}"))
}
