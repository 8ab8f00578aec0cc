//! Batched claims and a killed process: a run claims up to a batch of messages ahead of its
//! sends, but only a message whose send had begun may end `in_doubt` when the process dies.
//! The rest are given back by the next run and delivered once.

use std::collections::{HashMap, HashSet};

use crate::harness::TestDb;
use crate::transports::Transports;

const NOW: &str = "2026-03-09T15:00:00Z";

/// `n` bookings due for the 24 h reminder, each with its own patient (email only).
async fn seed_due(c: &tokio_postgres::Client, n: i32) {
    crate::support::due_for_reminder_24h(c, NOW, n, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_batch_leaves_in_doubt_only_the_sends_the_relay_saw() {
    const DUE: i32 = 120;
    const CONCURRENCY: usize = 4;
    let db = TestDb::migrated().await;
    let c = db.client().await;
    seed_due(&c, DUE).await;
    let tr = Transports::start().await;
    tr.smtp.close_gate();

    let mut cli = tr.apply_email_only(db.cmd());
    cli.args([
        "--now",
        NOW,
        "reminder-24h",
        "--concurrency",
        &CONCURRENCY.to_string(),
    ]);
    let mut child = cli.spawn();
    // As many messages as may be in flight have reached the relay and wait for its answer.
    tokio::task::block_in_place(|| tr.smtp.wait_held(CONCURRENCY));
    // The run claimed ahead of its sends: more rows are `sending` than the relay holds.
    let claimed = db
        .count("SELECT count(*) FROM journey_deliveries WHERE status = 'sending'")
        .await;
    assert!(
        claimed > CONCURRENCY as i64,
        "the scenario needs a batch claimed ahead of its sends; {claimed} row(s) claimed"
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // The relay accepts what it held: those messages did go out.
    tr.smtp.open_gate();
    let mut waited = 0;
    while tr.emails().len() < CONCURRENCY {
        waited += 1;
        assert!(waited < 200_000, "the held messages were never accepted");
        tokio::task::yield_now().await;
    }
    let seen_by_relay: HashSet<String> = tr.emails().iter().map(|m| m.to[0].clone()).collect();
    assert_eq!(seen_by_relay.len(), CONCURRENCY);
    crate::support::wait_connections_gone(&db).await;

    let out = tr
        .apply_email_only(db.cmd())
        .args(["--now", "2026-03-09T15:05:00Z", "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Every message went out exactly once: the held ones by the killed run, the rest by this.
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for m in tr.emails() {
        *per_recipient.entry(m.to[0].clone()).or_default() += 1;
    }
    assert!(
        per_recipient.values().all(|&n| n == 1),
        "a message arrived twice: {per_recipient:?}"
    );
    assert_eq!(
        per_recipient.len(),
        DUE as usize,
        "every reminder is delivered once the next run has run"
    );

    let rows = c
        .query(
            "SELECT p.email, d.status FROM cal_bookings b
               JOIN people p ON p.id = b.patient_id
               LEFT JOIN journey_deliveries d ON d.booking_id = b.id AND d.channel = 'email'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), DUE as usize);
    let mut in_doubt = Vec::new();
    for row in rows {
        let email: String = row.get(0);
        let status: Option<String> = row.get(1);
        match status.as_deref() {
            Some("sent") => {}
            Some("in_doubt") => in_doubt.push(email),
            other => panic!("a booking was left {other:?}"),
        }
    }
    assert!(
        in_doubt.len() <= CONCURRENCY,
        "{} rows in doubt, but at most {CONCURRENCY} sends had begun",
        in_doubt.len()
    );
    for email in &in_doubt {
        assert!(
            seen_by_relay.contains(email),
            "in doubt though the relay never saw it: {email}"
        );
    }
    assert_eq!(
        out.json()["stages"][0]["counters"]["in_doubt"].as_u64(),
        Some(in_doubt.len() as u64),
        "the next run counts the rows it declared in doubt, not the ones it gave back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_a_dead_run_never_began_to_send_are_due_again_and_only_begun_sends_are_in_doubt() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    seed_due(&c, 3).await;
    // A dead run (no connection under its name) left each booking's reminder `sending`:
    // the first a retry taken again (third attempt) and never begun, the second a first
    // claim never begun, the third begun (stamped) and unanswered.
    c.execute(
        "INSERT INTO journey_deliveries
           (booking_id, patient_id, stage, channel, recipient_role, status, attempts, run_id,
            claimed_by, lease_until, last_error, send_started_at)
         SELECT b.id, b.patient_id, 'reminder_24h', 'email', 'patient', 'sending',
                CASE WHEN b.n = 1 THEN 3 ELSE 1 END, gen_random_uuid(), 'journeyctl:gone',
                now() + interval '10 minutes', CASE WHEN b.n = 1 THEN '451 try later' END,
                CASE WHEN b.n = 3 THEN now() END
           FROM (SELECT id, patient_id, row_number() OVER (ORDER BY id) AS n
                   FROM cal_bookings) b",
        &[],
    )
    .await
    .unwrap();
    let tr = Transports::start().await;
    let out = tr
        .apply_email_only(db.cmd())
        .args(["--now", NOW, "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows: Vec<(String, i32)> = c
        .query(
            "SELECT d.status, d.attempts FROM journey_deliveries d
               JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM cal_bookings) b
                 ON b.id = d.booking_id
              ORDER BY b.n",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![
            // Given back as the retry it was (two attempts made), then sent: the third.
            ("sent".to_string(), 3),
            // Given back as never claimed, then sent on its first attempt.
            ("sent".to_string(), 1),
            // Begun: the provider may have it. Never sent again by a run.
            ("in_doubt".to_string(), 1),
        ]
    );
    assert_eq!(tr.emails().len(), 2);
    assert_eq!(
        out.json()["stages"][0]["counters"]["in_doubt"].as_u64(),
        Some(1)
    );
}
