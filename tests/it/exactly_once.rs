//! Exactly once, or visibly in doubt: overlapping runs, killed runs, statement counts and the
//! stage indexes.

use std::collections::HashMap;

use crate::harness::TestDb;
use crate::seed::at;
use crate::transports::Transports;

const NOW: &str = "2026-03-09T15:00:00Z";

/// `n` bookings due for the 24 h reminder, each with its own patient (email and phone).
async fn seed_due(c: &tokio_postgres::Client, n: i32) {
    crate::support::due_for_reminder_24h(c, NOW, n, true).await;
}

async fn four_overlapping_runs(with_lock: bool) {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    seed_due(&c, 1000).await;
    let tr = Transports::start().await;
    let mut children = Vec::new();
    for _ in 0..4 {
        let mut cli = tr.apply(db.cmd());
        cli.args(["--now", NOW, "-q", "reminder-24h"]);
        if !with_lock {
            cli.arg("--no-lock");
        }
        children.push(cli.spawn());
    }
    for child in children {
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mails = tr.emails();
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for m in &mails {
        *per_recipient.entry(m.to[0].clone()).or_default() += 1;
    }
    assert_eq!(mails.len(), 1000, "exactly one email per booking");
    assert_eq!(per_recipient.len(), 1000);
    let sms = tr.sms().await;
    let mut per_phone: HashMap<String, usize> = HashMap::new();
    for s in &sms {
        *per_phone.entry(s.to.clone()).or_default() += 1;
    }
    assert_eq!(sms.len(), 1000, "exactly one SMS per booking");
    assert_eq!(per_phone.len(), 1000);
    assert_eq!(
        db.count("SELECT count(*) FROM journey_deliveries WHERE status = 'sent'")
            .await,
        2000
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn four_overlapping_reminder_runs_without_the_lock_deliver_each_message_once() {
    four_overlapping_runs(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn four_overlapping_reminder_runs_with_the_lock_deliver_each_message_once() {
    four_overlapping_runs(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_mid_send_never_causes_a_second_send() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    seed_due(&c, 20).await;
    let tr = Transports::start().await;
    tr.smtp.close_gate();

    let mut cli = tr.apply_email_only(db.cmd());
    cli.args(["--now", NOW, "reminder-24h"]);
    let mut child = cli.spawn();
    // Some messages have reached the server and wait for its answer.
    tr.smtp.wait_held(4);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // The provider accepted what it held: those messages did go out.
    tr.smtp.open_gate();

    // The killed run's connections disappear once PostgreSQL notices. Only this test's
    // database counts: other tests share the server and run journeyctl at the same time.
    crate::support::wait_connections_gone(&db).await;

    let out = tr
        .apply_email_only(db.cmd())
        .args(["--now", "2026-03-09T15:05:00Z", "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for m in tr.emails() {
        *per_recipient.entry(m.to[0].clone()).or_default() += 1;
    }
    assert!(
        per_recipient.values().all(|&n| n == 1),
        "a message arrived twice: {per_recipient:?}"
    );
    let statuses = c
        .query(
            "SELECT b.id, d.status FROM cal_bookings b
             LEFT JOIN journey_deliveries d ON d.booking_id = b.id AND d.channel = 'email'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(statuses.len(), 20);
    let mut in_doubt = 0;
    for row in statuses {
        let status: Option<String> = row.get(1);
        match status.as_deref() {
            Some("sent") => {}
            Some("in_doubt") => in_doubt += 1,
            other => panic!("booking left {other:?}"),
        }
    }
    assert!(
        in_doubt >= 4,
        "the held messages are in doubt, got {in_doubt}"
    );
    assert_eq!(
        out.json()["stages"][0]["counters"]["in_doubt"]
            .as_u64()
            .unwrap(),
        in_doubt as u64
    );
}

async fn statements_for(n: i32) -> i64 {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .expect("pg_stat_statements is preloaded by the test server");
    seed_due(&c, n).await;
    c.batch_execute("UPDATE people SET phone_number = NULL")
        .await
        .unwrap();
    crate::support::reminder_24h_statements(&db, &c, NOW, n as usize).await
}

#[tokio::test]
async fn statements_per_run_grow_only_by_the_claim_and_record_of_each_delivery() {
    let small = statements_for(5).await;
    let large = statements_for(25).await;
    // 20 more deliveries: at most one claim and one record each, nothing per booking
    // besides (claims and records are batched per chunk since issue 11).
    assert!(
        large - small <= 20 * 2,
        "small run {small} statements, large run {large}"
    );
}

#[tokio::test]
async fn every_stage_finds_its_due_rows_through_an_index() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    // 200,000 bookings spread over two years, a few statuses and kinds.
    c.batch_execute(
        "INSERT INTO cal_bookings (cal_uid, start_time, end_time, booking_kind, status, created_at,
                                   cancelled_at, client_confirmation_sent_at,
                                   therapist_notification_sent_at)
         SELECT 'idx-' || i,
                timestamptz '2025-06-01' + (i * interval '5 minutes'),
                timestamptz '2025-06-01' + (i * interval '5 minutes') + interval '50 minutes',
                CASE WHEN i % 3 = 0 THEN 'intro' ELSE 'full_session' END,
                CASE WHEN i % 10 = 0 THEN 'CANCELLED' ELSE 'ACCEPTED' END,
                timestamptz '2025-06-01' + (i * interval '5 minutes') - interval '3 days',
                CASE WHEN i % 10 = 0 THEN timestamptz '2025-06-01' + (i * interval '5 minutes') - interval '1 day' END,
                now(), now()
         FROM generate_series(1, 200000) AS i;
         ANALYZE cal_bookings;",
    )
    .await
    .unwrap();
    let now = at("2026-01-15T12:00:00Z");
    for stage in journeyctl::domain::Stage::ALL {
        let (a, b) = stage.default_window();
        let sql = format!("EXPLAIN {}", journeyctl::db::bookings::due_query(stage));
        let limit: i64 = i64::MAX;
        let plan: Vec<String> = c
            .query(sql.as_str(), &[&now, &(now + a), &(now + b), &limit])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Seq Scan on cal_bookings b"),
            "{stage} scans cal_bookings:\n{plan}"
        );
        assert!(plan.contains("Index"), "{stage} uses no index:\n{plan}");
    }
}
