//! After the session: intro followup, session followup, cancellation recovery.

use chrono::Duration;

use crate::harness::TestDb;
use crate::seed::{self, at, Booking};
use crate::transports::Transports;

const NOW: &str = "2026-03-10T12:00:00Z";

struct World {
    db: TestDb,
    c: tokio_postgres::Client,
    tr: Transports,
    therapist: uuid::Uuid,
    patient: uuid::Uuid,
}

async fn world() -> World {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let therapist = seed::therapist(&c, "lena-brandt").await;
    let patient = seed::patient(&c, "Jonas Weber", Some("jonas+kh@example.de"), None).await;
    World {
        db,
        c,
        tr: Transports::start().await,
        therapist,
        patient,
    }
}

async fn run(w: &World, now: &str, stage: &str) -> serde_json::Value {
    let out =
        w.tr.apply(w.db.cmd())
            .args(["--now", now, "--json", stage])
            .run()
            .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.json()["stages"][0]["counters"].clone()
}

#[tokio::test]
async fn intro_followup_links_the_prefilled_full_session_booking_page() {
    let w = world().await;
    let m = seed::matched(&w.c, w.patient, w.therapist).await;
    seed::slots(
        &w.c,
        w.therapist,
        3,
        Some(at(NOW) + Duration::days(2)),
        at(NOW) - Duration::minutes(30),
    )
    .await;
    let mut b = Booking::new(w.therapist, w.patient, at(NOW) - Duration::minutes(35)).intro();
    b.match_id = Some(m);
    b.insert(&w.c).await;

    let counters = run(&w, NOW, "intro-followup").await;
    assert_eq!(counters["sent_email"], 1);
    let mails = w.tr.emails();
    assert_eq!(mails.len(), 1);
    let text = mails[0].text();
    let expected = format!(
        "https://cal.com/lena-brandt/full-session?metadata[kh_therapist_id]={}&metadata[kh_patient_id]={}&metadata[kh_match_id]={}&metadata[kh_booking_kind]=full_session&metadata[kh_source]=intro_followup_email&name=Jonas+Weber&email=jonas%2Bkh%40example.de",
        w.therapist, w.patient, m
    );
    assert!(
        text.contains(&expected),
        "booking link missing in:\n{text}\nexpected {expected}"
    );
    assert!(
        text.contains("12. März 2026"),
        "next free slot shown: {text}"
    );
    let secure: uuid::Uuid =
        w.c.query_one("SELECT secure_uuid FROM matches WHERE id = $1", &[&m])
            .await
            .unwrap()
            .get(0);
    assert!(
        text.contains(&format!("https://therapie.example/matches/{secure}")),
        "{text}"
    );
}

#[tokio::test]
async fn intro_followup_is_skipped_and_stays_done_when_a_full_session_was_booked() {
    let w = world().await;
    let intro = Booking::new(w.therapist, w.patient, at(NOW) - Duration::minutes(35))
        .intro()
        .insert(&w.c)
        .await;
    Booking::new(w.therapist, w.patient, at(NOW) + Duration::days(7))
        .insert(&w.c)
        .await;
    let counters = run(&w, NOW, "intro-followup").await;
    assert_eq!(counters["skipped_already_booked"], 1);
    assert!(w.tr.emails().is_empty());
    let marked: bool =
        w.c.query_one(
            "SELECT followup_sent_at IS NOT NULL FROM cal_bookings WHERE id = $1",
            &[&intro],
        )
        .await
        .unwrap()
        .get(0);
    assert!(marked, "the stage is marked done");
    // Even if the full session is cancelled a minute later, the followup stays done.
    w.c.execute(
        "UPDATE cal_bookings SET status = 'CANCELLED' WHERE booking_kind = 'full_session'",
        &[],
    )
    .await
    .unwrap();
    run(&w, "2026-03-10T12:05:00Z", "intro-followup").await;
    assert!(w.tr.emails().is_empty());
}

#[tokio::test]
async fn an_intro_ending_at_any_minute_is_followed_up_by_a_five_minute_schedule() {
    let w = world().await;
    // Intros every 20 minutes ending at :35, :55, :15 — and one at every minute of an hour.
    let base = at("2026-03-10T08:00:00Z");
    for minute in 0..60 {
        let p = seed::patient(&w.c, "P", Some(&format!("p{minute}@example.de")), None).await;
        let start = base + Duration::minutes(minute) - Duration::minutes(15);
        Booking::new(w.therapist, p, start)
            .intro()
            .insert(&w.c)
            .await;
    }
    // The shipped cadence: every 5 minutes, from 08:00 to 09:40.
    let mut t = base;
    while t <= base + Duration::minutes(100) {
        let out =
            w.tr.apply(w.db.cmd())
                .args(["--now", &t.to_rfc3339(), "-q", "intro-followup"])
                .run()
                .await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        t += Duration::minutes(5);
    }
    let mails = w.tr.emails();
    assert_eq!(mails.len(), 60, "every intro got exactly one followup");
    let mut to: Vec<String> = mails.iter().map(|m| m.to[0].clone()).collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), 60);
}

#[tokio::test]
async fn session_followup_waits_for_free_slots_and_then_sends() {
    let w = world().await;
    let b = Booking::new(w.therapist, w.patient, at(NOW) - Duration::days(4))
        .insert(&w.c)
        .await;
    seed::slots(&w.c, w.therapist, 0, None, at(NOW)).await;
    let counters = run(&w, NOW, "session-followup").await;
    assert_eq!(counters["skipped_no_availability"], 1);
    assert!(w.tr.emails().is_empty());
    let marked: bool =
        w.c.query_one(
            "SELECT session_followup_sent_at IS NOT NULL FROM cal_bookings WHERE id = $1",
            &[&b],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!marked, "not marked: slots may still appear");

    seed::slots(
        &w.c,
        w.therapist,
        4,
        Some(at(NOW) + Duration::days(1)),
        at("2026-03-10T13:00:00Z"),
    )
    .await;
    let counters = run(&w, "2026-03-10T13:00:00Z", "session-followup").await;
    assert_eq!(counters["sent_email"], 1);
    assert_eq!(w.tr.emails().len(), 1);
    assert!(w.tr.emails()[0].text().contains("session_followup_email"));
}

#[tokio::test]
async fn a_stale_slot_cache_shows_no_slot_rather_than_a_wrong_one() {
    let w = world().await;
    Booking::new(w.therapist, w.patient, at(NOW) - Duration::days(4))
        .insert(&w.c)
        .await;
    // Cached two days ago: the slot it names may be long gone.
    seed::slots(
        &w.c,
        w.therapist,
        2,
        Some(at(NOW) + Duration::hours(30)),
        at(NOW) - Duration::days(2),
    )
    .await;
    run(&w, NOW, "session-followup").await;
    let text = w.tr.emails()[0].text();
    assert!(!text.contains("11. März 2026"), "stale slot shown: {text}");
}

async fn cancelled_with_other_match(w: &World, hours_ago: i64) -> uuid::Uuid {
    let other = seed::therapist(&w.c, &format!("other-{}", uuid::Uuid::new_v4().simple())).await;
    seed::matched(&w.c, w.patient, w.therapist).await;
    seed::matched(&w.c, w.patient, other).await;
    Booking::new(w.therapist, w.patient, at(NOW) + Duration::days(2))
        .cancelled(at(NOW) - Duration::hours(hours_ago))
        .insert(&w.c)
        .await
}

#[tokio::test]
async fn cancellation_recovery_points_to_the_other_matches() {
    let w = world().await;
    cancelled_with_other_match(&w, 3).await;
    let counters = run(&w, NOW, "cancellation-recovery").await;
    assert_eq!(counters["sent_email"], 1);
    let text = w.tr.emails()[0].text();
    assert!(text.contains("https://therapie.example/matches/"), "{text}");
}

#[tokio::test]
async fn cancellation_recovery_skip_rules_each_hold() {
    // Recovered on their own: another active booking in the future.
    let w = world().await;
    cancelled_with_other_match(&w, 3).await;
    Booking::new(w.therapist, w.patient, at(NOW) + Duration::days(5))
        .insert(&w.c)
        .await;
    assert_eq!(
        run(&w, NOW, "cancellation-recovery").await["skipped_has_successful_booking"],
        1
    );

    // No other therapist among the matches (a declined one does not count).
    let w = world().await;
    let other = seed::therapist(&w.c, "declined-one").await;
    let m = seed::matched(&w.c, w.patient, other).await;
    w.c.execute(
        "UPDATE matches SET status = 'declined' WHERE id = $1",
        &[&m],
    )
    .await
    .unwrap();
    Booking::new(w.therapist, w.patient, at(NOW) + Duration::days(2))
        .cancelled(at(NOW) - Duration::hours(3))
        .insert(&w.c)
        .await;
    assert_eq!(
        run(&w, NOW, "cancellation-recovery").await["skipped_no_other_matches"],
        1
    );

    // The therapist asked to reschedule: not a lost patient.
    let w = world().await;
    let b = cancelled_with_other_match(&w, 3).await;
    w.c.execute(
        "UPDATE cal_bookings SET request_reschedule = true WHERE id = $1",
        &[&b],
    )
    .await
    .unwrap();
    run(&w, NOW, "cancellation-recovery").await;
    assert!(w.tr.emails().is_empty());
}

#[tokio::test]
async fn a_patient_recovered_71_hours_ago_is_skipped_and_73_hours_ago_is_not() {
    for (hours, expect_sent) in [(71, false), (73, true)] {
        let w = world().await;
        cancelled_with_other_match(&w, 3).await;
        // A recovery email for an earlier cancellation, `hours` ago.
        w.c.execute(
            "INSERT INTO journey_deliveries (booking_id, patient_id, stage, channel, recipient_role, status, sent_at)
             VALUES (gen_random_uuid(), $1, 'cancellation_recovery', 'email', 'patient', 'sent', $2)",
            &[&w.patient, &(at(NOW) - Duration::hours(hours))],
        )
        .await
        .unwrap();
        let counters = run(&w, NOW, "cancellation-recovery").await;
        assert_eq!(
            counters["sent_email"] == 1,
            expect_sent,
            "{hours} h: {counters}"
        );
    }
}

#[tokio::test]
async fn two_cancellations_of_one_patient_in_overlapping_runs_send_one_email() {
    let w = world().await;
    cancelled_with_other_match(&w, 3).await;
    Booking::new(w.therapist, w.patient, at(NOW) + Duration::days(3))
        .cancelled(at(NOW) - Duration::minutes(150))
        .insert(&w.c)
        .await;
    let mut children = Vec::new();
    for _ in 0..2 {
        let mut cli = w.tr.apply(w.db.cmd());
        cli.args(["--now", NOW, "-q", "cancellation-recovery", "--no-lock"]);
        children.push(cli.spawn());
    }
    for c in children {
        let out = c.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(w.tr.emails().len(), 1, "one patient, one recovery email");
}
