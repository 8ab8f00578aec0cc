//! The booking lifecycle on the event orders Cal.com really produces (issue 9): the webhook
//! side of the state machine, confirmations of requested bookings, the marketplace's old
//! trigger CHECK, error bodies without patient data, walk-in attendees and the invite UID of
//! rescheduled bookings. Every test goes through the real binary, PostgreSQL and SMTP.

use serde_json::Value;

use crate::harness::{CliOutput, TestDb};
use crate::support::{self, cal_fixture as fixture, signal, spawn_serve, PATIENT};
use crate::transports::Transports;

const SECRET: &str = "whsec_journeyctl_test_0001";
const OTHER_THERAPIST: &str = "4d0e9f80-7b6c-4d5e-9f30-2b1c0d9e8f70";
/// The intro fixture's booking (session 2026-03-05 09:20–09:35 UTC).
const INTRO_UID: &str = "Kx7pR2mWq9TzLc4VbN8sYd";
/// Before every fixture's session.
const NOW: &str = "2026-03-02T09:12:05Z";
/// Ten to fifteen minutes after the intro ended: inside intro-followup's window.
const AFTER_INTRO: &str = "2026-03-05T09:50:00Z";

/// A fixture body edited as JSON.
fn edited(name: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fixture(name)).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// The shared marketplace, plus a second therapist the patient was only proposed to.
async fn seed_marketplace(db: &TestDb) -> tokio_postgres::Client {
    let c = support::seed_marketplace(db).await;
    c.batch_execute(&format!(
        "INSERT INTO therapists (id, first_name, last_name, email, cal_username,
                                 cal_intro_event_type_id, cal_full_session_event_type_id)
           VALUES ('{OTHER_THERAPIST}', 'Tim', 'Falk', 'tim.falk@praxis.example', 'tim-falk', 2187, 2188);
         INSERT INTO matches (id, patient_id, therapist_id, status)
           VALUES (gen_random_uuid(), '{PATIENT}', '{OTHER_THERAPIST}', 'proposed');"
    ))
    .await
    .unwrap();
    c
}

/// `journeyctl webhook` with a correctly signed body, as of `now`.
async fn deliver(db: &TestDb, tr: &Transports, body: &[u8], now: &str) -> CliOutput {
    support::signed_webhook(tr.apply(db.cmd()), SECRET, body, now).await
}

/// Delivers a body and insists it was taken (exit 0, HTTP 200).
async fn post(db: &TestDb, tr: &Transports, body: &[u8], now: &str) -> Value {
    let out = deliver(db, tr, body, now).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let json = out.json();
    assert_eq!(json["status"], 200, "{json}");
    json
}

/// One stage command as of `now`; returns its counters.
async fn stage(db: &TestDb, tr: &Transports, command: &str, now: &str) -> Value {
    support::stage_counters(db, tr, command, now).await
}

async fn status(c: &tokio_postgres::Client, uid: &str) -> Option<String> {
    c.query_one(
        "SELECT status FROM cal_bookings WHERE cal_uid = $1",
        &[&uid],
    )
    .await
    .unwrap_or_else(|e| panic!("booking {uid}: {e}"))
    .get(0)
}

fn subjects(tr: &Transports) -> Vec<String> {
    tr.emails().iter().map(|m| m.subject()).collect()
}

#[tokio::test]
async fn a_late_meeting_ended_never_completes_a_guest_no_show_booking() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    post(&db, &tr, &fixture("booking_created_intro.json"), NOW).await;
    post(
        &db,
        &tr,
        &fixture("booking_no_show_updated.json"),
        AFTER_INTRO,
    )
    .await;
    // Cal.com fires MEETING_ENDED at the scheduled end; the flat body carries no event time.
    post(&db, &tr, &fixture("meeting_ended_flat.json"), AFTER_INTRO).await;
    assert_eq!(
        status(&c, INTRO_UID).await.as_deref(),
        Some("NO_SHOW_GUEST")
    );

    let before = tr.emails().len();
    let counters = stage(&db, &tr, "intro-followup", AFTER_INTRO).await;
    assert_eq!(counters["sent_email"], 0, "{counters}");
    assert_eq!(
        tr.emails().len(),
        before,
        "no intro followup to a patient who never joined: {:?}",
        subjects(&tr)
    );
}

#[tokio::test]
async fn a_stale_meeting_ended_never_completes_a_cancelled_booking() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    post(&db, &tr, &fixture("booking_created_intro.json"), NOW).await;
    let cancelled = edited("booking_created_intro.json", |v| {
        v["triggerEvent"] = "BOOKING_CANCELLED".into();
        v["createdAt"] = "2026-03-05T07:00:00.000Z".into();
        v["payload"]["status"] = "CANCELLED".into();
        v["payload"]["cancellationReason"] = "Mir ist etwas dazwischengekommen.".into();
        v["payload"]["requestReschedule"] = false.into();
    });
    post(&db, &tr, &cancelled, "2026-03-05T07:00:05Z").await;
    post(&db, &tr, &fixture("meeting_ended_flat.json"), AFTER_INTRO).await;
    assert_eq!(status(&c, INTRO_UID).await.as_deref(), Some("CANCELLED"));

    let confirmations = tr.emails().len();
    let counters = stage(&db, &tr, "intro-followup", AFTER_INTRO).await;
    assert_eq!(counters["sent_email"], 0, "{counters}");
    assert_eq!(tr.emails().len(), confirmations, "{:?}", subjects(&tr));

    let counters = stage(&db, &tr, "cancellation-recovery", AFTER_INTRO).await;
    assert_eq!(counters["sent_email"], 1, "{counters}");
    let mails = tr.emails();
    assert_eq!(mails.len(), confirmations + 1);
    assert_eq!(mails.last().unwrap().to, vec!["jonas.weber@example.de"]);
}

/// The intro fixture as Cal.com sends it for an event type that needs the host's confirmation.
fn requested() -> Vec<u8> {
    edited("booking_created_intro.json", |v| {
        v["triggerEvent"] = "BOOKING_REQUESTED".into();
        v["createdAt"] = "2026-03-02T09:10:00.000Z".into();
        v["payload"]["status"] = "PENDING".into();
        v["payload"]["requiresConfirmation"] = true.into();
    })
}

#[tokio::test]
async fn a_requested_booking_is_confirmed_only_once_the_host_accepts_and_then_exactly_once() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    post(&db, &tr, &requested(), NOW).await;
    assert_eq!(status(&c, INTRO_UID).await.as_deref(), Some("PENDING"));
    // Some Cal.com versions also send BOOKING_CREATED while the booking is still PENDING.
    let created_pending = edited("booking_created_intro.json", |v| {
        v["createdAt"] = "2026-03-02T09:10:01.000Z".into();
        v["payload"]["status"] = "PENDING".into();
    });
    let out = post(&db, &tr, &created_pending, NOW).await;
    assert_eq!(out["confirmation_sent"], Value::Null, "{out}");
    assert_eq!(status(&c, INTRO_UID).await.as_deref(), Some("PENDING"));
    assert!(
        tr.emails().is_empty(),
        "nothing confirmed while pending: {:?}",
        subjects(&tr)
    );

    // The host accepts: BOOKING_CREATED with ACCEPTED for the same uid.
    post(&db, &tr, &fixture("booking_created_intro.json"), NOW).await;
    assert_eq!(status(&c, INTRO_UID).await.as_deref(), Some("ACCEPTED"));
    // Cal.com retries with a fresh envelope: still one of each.
    let retried = edited("booking_created_intro.json", |v| {
        v["createdAt"] = "2026-03-02T09:12:09.000Z".into();
    });
    post(&db, &tr, &retried, "2026-03-02T09:12:10Z").await;

    let mut got = subjects(&tr);
    got.sort();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].starts_with("Neue Buchung"), "{got:?}");
    assert!(got[1].starts_with("Termin bestätigt"), "{got:?}");
    let to: Vec<String> = tr.emails().iter().map(|m| m.to[0].clone()).collect();
    assert!(to.contains(&"jonas.weber@example.de".to_string()), "{to:?}");
    assert!(
        to.contains(&"lena.brandt@praxis.example".to_string()),
        "{to:?}"
    );
}

/// Depends on `confirmation-recovery`'s selection treating PENDING as not active (SPEC §1),
/// which lives in `db/bookings.rs`.
#[tokio::test]
async fn confirmation_recovery_never_confirms_a_pending_booking() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    post(&db, &tr, &requested(), NOW).await;
    assert_eq!(status(&c, INTRO_UID).await.as_deref(), Some("PENDING"));
    let later = "2026-03-02T10:00:00Z";
    let counters = stage(&db, &tr, "confirmation-recovery", later).await;
    assert_eq!(counters["sent_email"], 0, "{counters}");
    assert!(tr.emails().is_empty(), "{:?}", subjects(&tr));

    // Accepted: the webhook confirms both sides, and recovery has nothing left to send.
    post(&db, &tr, &fixture("booking_created_intro.json"), later).await;
    let counters = stage(&db, &tr, "confirmation-recovery", "2026-03-02T10:30:00Z").await;
    assert_eq!(counters["sent_email"], 0, "{counters}");
    assert_eq!(tr.emails().len(), 2, "{:?}", subjects(&tr));
}

/// The marketplace's original `cal_bookings`, with its CHECK on the four old triggers.
const MARKETPLACE_SCHEMA: &str =
    "CREATE TABLE people (id uuid PRIMARY KEY, name text, email text);
     CREATE TABLE therapists (id uuid PRIMARY KEY, first_name text, cal_username text);
     CREATE TABLE matches (id uuid PRIMARY KEY, patient_id uuid, therapist_id uuid);
     CREATE TABLE cal_bookings (id uuid PRIMARY KEY, cal_uid text NOT NULL UNIQUE,
                                start_time timestamptz, status text,
                                last_trigger_event text CHECK (last_trigger_event IN
                                  ('BOOKING_CREATED', 'BOOKING_RESCHEDULED',
                                   'BOOKING_CANCELLED', 'MEETING_ENDED')));
     INSERT INTO people VALUES ('7b1f3c2e-5a4d-4c8e-9f10-2a3b4c5d6e7f', 'Jonas Weber', 'jonas.weber@example.de');
     INSERT INTO therapists VALUES ('3c9d8e7f-6a5b-4c4d-8e2f-1a0b9c8d7e6f', 'Lena', 'lena-brandt');
     INSERT INTO cal_bookings VALUES (gen_random_uuid(), 'old-uid-1', '2026-03-10T15:00:00Z',
                                      'accepted', 'BOOKING_CREATED');";

#[tokio::test]
async fn after_migrate_every_trigger_stores_on_the_marketplaces_schema() {
    let db = TestDb::empty().await;
    db.client()
        .await
        .batch_execute(MARKETPLACE_SCHEMA)
        .await
        .unwrap();
    let out = db.cmd().arg("migrate").run().await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let c = db.client().await;
    let tr = Transports::start().await;

    post(&db, &tr, &requested(), NOW).await;
    assert_eq!(status(&c, INTRO_UID).await.as_deref(), Some("PENDING"));
    for (i, (trigger, want)) in [
        ("BOOKING_REJECTED", "REJECTED"),
        ("BOOKING_NO_SHOW_UPDATED", "NO_SHOW_GUEST"),
        ("AFTER_HOSTS_CAL_VIDEO_NO_SHOW", "NO_SHOW_HOST"),
        ("MEETING_STARTED", "ACCEPTED"),
    ]
    .into_iter()
    .enumerate()
    {
        let uid = format!("uid-{trigger}");
        let body = edited("booking_created_intro.json", |v| {
            v["triggerEvent"] = trigger.into();
            v["createdAt"] = format!("2026-03-02T09:0{i}:00.000Z").into();
            v["payload"]["uid"] = uid.clone().into();
            v["payload"]["attendees"][0]["noShow"] = true.into();
        });
        post(&db, &tr, &body, NOW).await;
        let row = c
            .query_one(
                "SELECT last_trigger_event, status FROM cal_bookings WHERE cal_uid = $1",
                &[&uid],
            )
            .await
            .unwrap_or_else(|e| panic!("{trigger} was not stored: {e}"));
        assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some(trigger));
        if trigger != "MEETING_STARTED" {
            assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some(want));
        }
    }
    // The marketplace's own row is still there, untouched.
    assert_eq!(status(&c, "old-uid-1").await.as_deref(), Some("accepted"));
}

/// A cancellation that PostgreSQL refuses (a constraint the operator added), so the error's
/// DETAIL holds the failing row.
async fn refuse_cancellations(c: &tokio_postgres::Client) {
    c.batch_execute(
        "ALTER TABLE cal_bookings ADD CONSTRAINT no_cancellations_here
           CHECK (last_trigger_event IS DISTINCT FROM 'BOOKING_CANCELLED')",
    )
    .await
    .unwrap();
}

const PATIENT_DATA: [&str; 5] = [
    "jonas.weber@",
    "Jonas Weber",
    "+4915112345678",
    "krank",
    "Failing row",
];

fn assert_no_patient_data(what: &str, text: &str) {
    for secret in PATIENT_DATA {
        assert!(!text.contains(secret), "{what} holds {secret:?}: {text}");
    }
}

#[tokio::test]
async fn a_database_error_from_webhook_never_echoes_the_patients_row() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    refuse_cancellations(&c).await;
    let out = deliver(&db, &tr, &fixture("booking_cancelled.json"), NOW).await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["status"], 500);
    assert!(
        out.stdout.contains("no_cancellations_here"),
        "the operator still learns which constraint: {}",
        out.stdout
    );
    assert_no_patient_data("stdout", &out.stdout);
    assert_no_patient_data("stderr", &out.stderr);
    let events = crate::seed::events(&c, "error").await;
    assert!(!events.is_empty());
    assert_no_patient_data("error events", &serde_json::to_string(&events).unwrap());
}

#[tokio::test]
async fn a_database_error_from_serve_never_echoes_the_patients_row() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    refuse_cancellations(&c).await;
    let mut cli = tr.apply(db.cmd());
    cli.env("CAL_WEBHOOK_SECRET", SECRET)
        // Every line of ours; other crates' debug lines are dropped by `init_logging`.
        .env("RUST_LOG", "info,journeyctl=trace")
        .args(["--now", NOW]);
    let (child, base) = spawn_serve(cli).await;
    let http = reqwest::Client::new();
    let body = fixture("booking_cancelled.json");
    let sig = journeyctl::webhook::sign(&journeyctl::secret::Secret::new(SECRET), &body);
    let resp = http
        .post(format!("{base}/api/public/cal/webhook"))
        .header("X-Cal-Signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let text = resp.text().await.unwrap();
    assert_no_patient_data("500 body", &text);

    signal(&child, "TERM", false);
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no_cancellations_here"), "{stderr}");
    assert_no_patient_data("serve's stderr", &stderr);
    assert_no_patient_data("serve's stdout", &String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn kh_test_as_1_or_true_in_string_or_json_makes_a_test_booking() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    for (i, flag) in [
        Value::from("1"),
        Value::from("true"),
        Value::from(true),
        Value::from(1),
    ]
    .into_iter()
    .enumerate()
    {
        let uid = format!("test-booking-{i}");
        let body = edited("booking_created_intro.json", |v| {
            v["payload"]["uid"] = uid.clone().into();
            v["payload"]["metadata"]["kh_test"] = flag.clone();
        });
        post(&db, &tr, &body, NOW).await;
        let is_test: bool = c
            .query_one(
                "SELECT is_test FROM cal_bookings WHERE cal_uid = $1",
                &[&uid],
            )
            .await
            .unwrap()
            .get(0);
        assert!(is_test, "kh_test = {flag} is a test booking");
    }
    assert!(
        tr.emails().is_empty(),
        "test bookings never reach the patient: {:?}",
        subjects(&tr)
    );
}

#[tokio::test]
async fn a_walk_in_attendee_is_kept_on_the_booking_and_linked_once_a_person_exists() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    let walk_in = |created_at: &str| {
        edited("booking_created_intro.json", |v| {
            v["createdAt"] = created_at.into();
            let p = &mut v["payload"];
            p["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("kh_patient_id");
            p["attendees"][0]["email"] = "Mara.Koch@example.de".into();
            p["attendees"][0]["name"] = "Mara Koch".into();
            p["attendees"][0]["phoneNumber"] = "+4917612345678".into();
        })
    };
    post(&db, &tr, &walk_in("2026-03-02T09:12:03.418Z"), NOW).await;
    let row = c
        .query_one(
            "SELECT patient_id, attendee_email, attendee_name, attendee_phone
             FROM cal_bookings WHERE cal_uid = $1",
            &[&INTRO_UID],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<uuid::Uuid>>(0), None);
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("Mara.Koch@example.de")
    );
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("Mara Koch")
    );
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("+4917612345678")
    );

    // A no-show payload names no attendee name or phone: nothing known is lost.
    let no_show_without_contact = edited("booking_no_show_updated.json", |v| {
        v["payload"]["attendees"] = serde_json::json!([{"noShow": false}]);
    });
    post(&db, &tr, &no_show_without_contact, NOW).await;

    // The marketplace signs the person up; the next event for the booking links them.
    let person = uuid::Uuid::new_v4();
    c.execute(
        "INSERT INTO people (id, name, email) VALUES ($1, 'Mara Koch', 'mara.koch@example.de')",
        &[&person],
    )
    .await
    .unwrap();
    post(&db, &tr, &walk_in("2026-03-02T09:20:00.000Z"), NOW).await;
    let row = c
        .query_one(
            "SELECT patient_id, attendee_email, attendee_name, attendee_phone
             FROM cal_bookings WHERE cal_uid = $1",
            &[&INTRO_UID],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<uuid::Uuid>>(0), Some(person));
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("Mara.Koch@example.de")
    );
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("Mara Koch")
    );
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("+4917612345678")
    );
}

async fn invite(c: &tokio_postgres::Client, uid: &str) -> (Option<String>, Option<i32>) {
    let row = c
        .query_one(
            "SELECT ical_uid, ical_sequence FROM cal_bookings WHERE cal_uid = $1",
            &[&uid],
        )
        .await
        .unwrap_or_else(|e| panic!("booking {uid}: {e}"));
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_rescheduled_booking_keeps_the_first_invites_uid_with_a_higher_sequence() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;
    let first = "Fs3nQ8vLx2WpHc7KdM5tRb";
    post(&db, &tr, &fixture("booking_created_full.json"), NOW).await;
    assert_eq!(invite(&c, first).await, (Some(first.to_string()), Some(0)));

    post(&db, &tr, &fixture("booking_rescheduled.json"), NOW).await;
    assert_eq!(
        invite(&c, "Rz9mC4wPq7XnLb2VkT6sHf").await,
        (Some(first.to_string()), Some(1))
    );

    // Moved again; this Cal.com body restarts its own sequence at 0.
    let again = edited("booking_rescheduled.json", |v| {
        v["createdAt"] = "2026-03-09T08:00:00.000Z".into();
        let p = &mut v["payload"];
        p["uid"] = "Third4TimeUid0000000000".into();
        p["rescheduleUid"] = "Rz9mC4wPq7XnLb2VkT6sHf".into();
        p["iCalSequence"] = 0.into();
        p["startTime"] = "2026-03-12T16:00:00Z".into();
        p["endTime"] = "2026-03-12T16:50:00Z".into();
    });
    post(&db, &tr, &again, NOW).await;
    assert_eq!(
        invite(&c, "Third4TimeUid0000000000").await,
        (Some(first.to_string()), Some(2))
    );
    assert_eq!(
        status(&c, "Rz9mC4wPq7XnLb2VkT6sHf").await.as_deref(),
        Some("RESCHEDULED")
    );
}

/// The intro fixture cancelled, as Cal.com sends it at `created_at`.
fn cancelled_intro(created_at: &str) -> Vec<u8> {
    edited("booking_created_intro.json", |v| {
        v["triggerEvent"] = "BOOKING_CANCELLED".into();
        v["createdAt"] = created_at.into();
        v["payload"]["status"] = "CANCELLED".into();
    })
}

#[tokio::test]
async fn only_cancelling_an_active_booking_sends_the_cancellation_notice() {
    let db = TestDb::migrated().await;
    let c = seed_marketplace(&db).await;
    let tr = Transports::start().await;

    // Pending (the host never accepted): no invite went out, nothing to withdraw.
    post(&db, &tr, &requested(), NOW).await;
    let out = post(&db, &tr, &cancelled_intro("2026-03-02T09:11:00.000Z"), NOW).await;
    assert_eq!(out["cancellation_notice_sent"], Value::Null, "{out}");
    assert_eq!(status(&c, INTRO_UID).await.as_deref(), Some("CANCELLED"));

    // A cancellation heard of before its booking: nothing was ever confirmed.
    let early = edited("booking_cancelled.json", |v| {
        v["payload"]["uid"] = "NeverCreated0000000000".into();
    });
    let out = post(&db, &tr, &early, NOW).await;
    assert_eq!(out["cancellation_notice_sent"], Value::Null, "{out}");

    // An accepted booking cancelled: the notice is due, once.
    post(&db, &tr, &fixture("booking_created_full.json"), NOW).await;
    let cancel_full = edited("booking_cancelled.json", |v| {
        v["payload"]["uid"] = "Fs3nQ8vLx2WpHc7KdM5tRb".into();
    });
    let out = post(&db, &tr, &cancel_full, NOW).await;
    assert_eq!(out["cancellation_notice_sent"], true, "{out}");
    let again = edited("booking_cancelled.json", |v| {
        v["createdAt"] = "2026-03-09T18:03:00.000Z".into();
        v["payload"]["uid"] = "Fs3nQ8vLx2WpHc7KdM5tRb".into();
    });
    let out = post(&db, &tr, &again, NOW).await;
    assert_eq!(out["cancellation_notice_sent"], Value::Null, "{out}");
}

#[tokio::test]
async fn the_status_sql_helpers_select_any_case_and_treat_null_as_active_and_pending_as_not() {
    use journeyctl::domain::BookingStatus;
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO cal_bookings (cal_uid, status) VALUES
           ('null', NULL), ('accepted', 'accepted'), ('ACCEPTED', 'ACCEPTED'),
           ('pending', 'pending'), ('cancelled', 'cancelled'), ('no_show', 'no_show'),
           ('NO_SHOW_HOST', 'NO_SHOW_HOST'), ('completed', 'Completed'),
           ('rescheduled', 'RESCHEDULED'), ('rejected', 'rejected')",
    )
    .await
    .unwrap();
    let uids = |predicate: String| {
        let c = &c;
        async move {
            let mut found = c
                .query(
                    &format!("SELECT b.cal_uid FROM cal_bookings b WHERE {predicate}"),
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("{predicate}: {e}"))
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>();
            // Byte order, whatever the database's collation.
            found.sort();
            found
        }
    };
    assert_eq!(
        uids(BookingStatus::sql_is_active("b")).await,
        ["ACCEPTED", "accepted", "null"]
    );
    assert_eq!(
        uids(BookingStatus::sql_fell_through("b")).await,
        [
            "NO_SHOW_HOST",
            "cancelled",
            "no_show",
            "rejected",
            "rescheduled"
        ]
    );
    assert_eq!(
        uids(BookingStatus::sql_not_fell_through("b")).await,
        ["ACCEPTED", "accepted", "completed", "null", "pending"]
    );
    assert_eq!(
        uids(BookingStatus::Cancelled.sql_is("b")).await,
        ["cancelled"]
    );
}
