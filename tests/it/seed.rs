//! Rows for tests: therapists, patients, matches, slots and bookings, inserted as the
//! marketplace and the webhook would.

#![allow(dead_code)]

use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Client;
use uuid::Uuid;

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub async fn therapist(c: &Client, username: &str) -> Uuid {
    let id = Uuid::new_v4();
    c.execute(
        "INSERT INTO therapists (id, first_name, last_name, email, cal_username,
                                 cal_intro_event_type_id, cal_full_session_event_type_id)
         VALUES ($1, 'Lena', 'Brandt', $2, $3, 1187, 1188)",
        &[&id, &format!("{username}@praxis.example"), &username],
    )
    .await
    .unwrap();
    id
}

pub async fn patient(c: &Client, name: &str, email: Option<&str>, phone: Option<&str>) -> Uuid {
    let id = Uuid::new_v4();
    c.execute(
        "INSERT INTO people (id, name, email, phone_number) VALUES ($1, $2, $3, $4)",
        &[&id, &name, &email, &phone],
    )
    .await
    .unwrap();
    id
}

pub async fn test_patient(c: &Client, email: &str) -> Uuid {
    let id = patient(c, "QA Person", Some(email), None).await;
    c.execute(
        "UPDATE people SET metadata = '{\"is_test\": \"true\"}' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    id
}

pub async fn matched(c: &Client, patient: Uuid, therapist: Uuid) -> Uuid {
    let id = Uuid::new_v4();
    c.execute(
        "INSERT INTO matches (id, patient_id, therapist_id, status) VALUES ($1, $2, $3, 'proposed')",
        &[&id, &patient, &therapist],
    )
    .await
    .unwrap();
    id
}

pub async fn slots(
    c: &Client,
    therapist: Uuid,
    full_slots: i32,
    next: Option<DateTime<Utc>>,
    cached_at: DateTime<Utc>,
) {
    c.execute(
        "INSERT INTO cal_slots_cache (therapist_id, full_slots_count, next_full_time_utc, cached_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (therapist_id) DO UPDATE SET full_slots_count = $2, next_full_time_utc = $3, cached_at = $4",
        &[&therapist, &full_slots, &next, &cached_at],
    )
    .await
    .unwrap();
}

#[derive(Clone)]
pub struct Booking {
    pub uid: String,
    pub therapist: Option<Uuid>,
    pub patient: Option<Uuid>,
    pub match_id: Option<Uuid>,
    pub start: DateTime<Utc>,
    pub minutes: i64,
    pub kind: &'static str,
    pub status: Option<&'static str>,
    pub is_test: bool,
    pub created_at: DateTime<Utc>,
    pub video_url: Option<String>,
    pub confirmed: bool,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub request_reschedule: bool,
}

impl Booking {
    pub fn new(therapist: Uuid, patient: Uuid, start: DateTime<Utc>) -> Booking {
        Booking {
            uid: format!("uid-{}", Uuid::new_v4().simple()),
            therapist: Some(therapist),
            patient: Some(patient),
            match_id: None,
            start,
            minutes: 50,
            kind: "full_session",
            status: Some("ACCEPTED"),
            is_test: false,
            created_at: start - Duration::days(3),
            video_url: Some("https://app.cal.com/video/abc123".to_string()),
            confirmed: true,
            cancelled_at: None,
            request_reschedule: false,
        }
    }
    pub fn intro(mut self) -> Booking {
        self.kind = "intro";
        self.minutes = 15;
        self
    }
    pub fn status(mut self, s: Option<&'static str>) -> Booking {
        self.status = s;
        self
    }
    pub fn unconfirmed(mut self, created_at: DateTime<Utc>) -> Booking {
        self.confirmed = false;
        self.created_at = created_at;
        self
    }
    pub fn cancelled(mut self, at: DateTime<Utc>) -> Booking {
        self.status = Some("CANCELLED");
        self.cancelled_at = Some(at);
        self
    }

    pub async fn insert(&self, c: &Client) -> Uuid {
        let id = Uuid::new_v4();
        let end = self.start + Duration::minutes(self.minutes);
        let confirmed_at = self.confirmed.then_some(self.created_at);
        c.execute(
            "INSERT INTO cal_bookings (id, cal_uid, therapist_id, patient_id, match_id, start_time,
                 end_time, booking_kind, status, is_test, created_at, updated_at, video_url,
                 client_confirmation_sent_at, therapist_notification_sent_at, cancelled_at,
                 request_reschedule, last_trigger_event)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $13, $14, $15,
                     'BOOKING_CREATED')",
            &[
                &id,
                &self.uid,
                &self.therapist,
                &self.patient,
                &self.match_id,
                &self.start,
                &end,
                &self.kind,
                &self.status,
                &self.is_test,
                &self.created_at,
                &self.video_url,
                &confirmed_at,
                &self.cancelled_at,
                &self.request_reschedule,
            ],
        )
        .await
        .unwrap();
        id
    }
}

/// Ledger rows of a booking as (stage, channel, role, status).
pub async fn ledger(c: &Client, booking: Uuid) -> Vec<(String, String, String, String)> {
    c.query(
        "SELECT stage, channel, recipient_role, status FROM journey_deliveries
         WHERE booking_id = $1 ORDER BY stage, channel, recipient_role",
        &[&booking],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

pub async fn events(c: &Client, kind: &str) -> Vec<serde_json::Value> {
    c.query(
        "SELECT properties FROM events WHERE type = $1 ORDER BY created_at",
        &[&kind],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}
