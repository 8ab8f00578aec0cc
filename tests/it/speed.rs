//! Speed (issue 11), as behaviours that can be counted rather than timed: what a selection
//! reads, how many statements a chunk of deliveries costs, how many connections a run with
//! nothing to do opens, and that chunked selection still delivers every message once.

use std::collections::HashMap;

use crate::harness::TestDb;
use crate::seed::at;
use crate::support::{ledger_rows as rows, wait_for_count};
use crate::transports::Transports;

const NOW: &str = "2026-03-09T15:00:00Z";

/// `n` bookings with a session in 24 hours, each with its own patient (email only);
/// `reminded` of them already got their 24 h reminder.
async fn seed_window(c: &tokio_postgres::Client, n: i32, reminded: i32) {
    crate::support::due_for_reminder_24h(c, NOW, n, false).await;
    c.execute(
        "UPDATE cal_bookings SET reminder_24h_sent_at = $2::timestamptz - interval '1 hour'
          WHERE id IN (SELECT id FROM cal_bookings ORDER BY id LIMIT $1)",
        &[&i64::from(reminded), &at(NOW)],
    )
    .await
    .unwrap();
    c.batch_execute("ANALYZE cal_bookings; ANALYZE journey_deliveries")
        .await
        .unwrap();
}

/// Rows the plan's nodes on `cal_bookings` produced or threw away, from EXPLAIN ANALYZE.
fn rows_read(node: &serde_json::Value) -> u64 {
    let mut n = 0;
    if node["Relation Name"] == "cal_bookings" {
        let loops = node["Actual Loops"].as_u64().unwrap_or(1);
        n += (node["Actual Rows"].as_u64().unwrap_or(0)
            + node["Rows Removed by Filter"].as_u64().unwrap_or(0)
            + node["Rows Removed by Index Recheck"].as_u64().unwrap_or(0))
            * loops;
    }
    if let Some(plans) = node["Plans"].as_array() {
        n += plans.iter().map(rows_read).sum::<u64>();
    }
    n
}

#[tokio::test]
async fn a_reminder_window_of_already_reminded_bookings_reads_none_of_them() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    seed_window(&c, 2003, 2000).await;
    let stage = journeyctl::domain::Stage::Reminder24h;
    let now = at(NOW);
    let (a, b) = stage.default_window();
    let sql = format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        journeyctl::db::bookings::due_query(stage)
    );
    let limit: i64 = 500;
    let plan: serde_json::Value = c
        .query_one(sql.as_str(), &[&now, &(now + a), &(now + b), &limit])
        .await
        .unwrap()
        .get(0);
    let read = rows_read(&plan[0]["Plan"]);
    assert!(
        read <= 20,
        "the selection read {read} rows of cal_bookings for 3 due bookings among 2,000 already reminded:\n{plan:#}"
    );
}

/// Sessions PostgreSQL counted in this database (a session is counted once its backend has
/// ended and flushed its statistics).
async fn sessions(c: &tokio_postgres::Client) -> i64 {
    c.batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    c.query_one(
        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn statements_for_reminders(n: i32) -> i64 {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .unwrap();
    seed_window(&c, n, 0).await;
    crate::support::reminder_24h_statements(&db, &c, NOW, n as usize).await
}

#[tokio::test]
async fn the_claims_and_outcomes_of_a_chunk_are_one_statement_each() {
    let small = statements_for_reminders(5).await;
    let large = statements_for_reminders(60).await;
    // 55 more deliveries, all in one claim batch and one record batch, plus the one
    // send-started stamp each message gets right before its send (issue 12: a killed run
    // leaves in doubt only what a provider may have seen).
    assert!(
        large - small <= 55 + 2,
        "5 deliveries: {small} statements, 60 deliveries: {large}"
    );
}

/// `followups` at `NOW`, email to an outbox; it must succeed.
async fn run_followups(db: &TestDb) -> crate::harness::CliOutput {
    let outbox = tempfile::tempdir().unwrap();
    let out = db
        .cmd()
        .env("EMAIL_OUTBOX_DIR", outbox.path())
        .env("EMAIL_FROM", "Praxis <termine@example.de>")
        .args(["--now", NOW, "followups"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    out
}

#[tokio::test]
async fn a_run_with_nothing_due_opens_one_connection() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    seed_window(&c, 3, 3).await;
    let before = sessions(&c).await;
    run_followups(&db).await;
    // A session is counted once its backend has ended: wait for the run's to end.
    let mut waited = 0;
    loop {
        let left: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name LIKE 'journeyctl:%' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        waited += 1;
        assert!(waited < 200_000, "the run's connections never went away");
        tokio::task::yield_now().await;
    }
    let after = sessions(&c).await;
    assert_eq!(
        after - before,
        1,
        "sessions a `followups` run with nothing due opened"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn more_due_bookings_than_a_page_are_each_delivered_once() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    seed_window(&c, 1100, 0).await;
    let tr = Transports::start().await;
    let out = tr
        .apply_email_only(db.cmd())
        .args(["--now", NOW, "--json", "reminder-24h"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for m in tr.emails() {
        *per_recipient.entry(m.to[0].clone()).or_default() += 1;
    }
    assert_eq!(per_recipient.len(), 1100);
    assert!(per_recipient.values().all(|&n| n == 1));
    assert_eq!(
        out.json()["stages"][0]["counters"]["processed"].as_u64(),
        Some(1100)
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM cal_bookings
              WHERE reminder_24h_sent_at IS NOT NULL"
        )
        .await,
        1100
    );
}

/// Calls of statements matching `pattern` (a LIKE pattern) in this database since the reset.
async fn calls(c: &tokio_postgres::Client, pattern: &str) -> i64 {
    c.query_one(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s
         JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = current_database() AND s.query LIKE $1",
        &[&pattern],
    )
    .await
    .unwrap()
    .get::<_, i64>(0)
}

async fn reset_statements(c: &tokio_postgres::Client) {
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .unwrap();
    c.query("SELECT pg_stat_statements_reset()", &[])
        .await
        .unwrap();
}

/// The tidying statement (abandoned sends, walk-ins, closed retries) includes the walk-in link.
const TIDYING: &str = "%UPDATE cal_bookings b%SET patient_id%";

#[tokio::test]
async fn followups_with_nothing_due_selects_nothing_and_plans_no_tidying() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    // Every booking of the reminder window already reminded: nothing is due anywhere, and the
    // ledger holds nothing to tidy.
    seed_window(&c, 20, 20).await;
    reset_statements(&c).await;
    run_followups(&db).await;
    // The selection (its column list ends in `page_key`) is planned for no stage.
    assert_eq!(calls(&c, "%AS page_key%").await, 0, "selections run");
    assert_eq!(calls(&c, TIDYING).await, 0, "tidying statements");
    // Six stages, each with one look at its lock, the survey and the run's record (36
    // statements and more when each stage tidied and selected on its own).
    let total = crate::support::statements(&c).await;
    assert!(
        total <= 12,
        "a run with nothing due took {total} statements"
    );
}

#[tokio::test]
async fn followups_with_nothing_due_looks_at_every_stage_lock_in_one_statement() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    seed_window(&c, 20, 20).await;
    // Another run holds the 1 h reminder's lock: that stage alone reports itself skipped.
    let holder = db.client().await;
    holder
        .execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[
                &journeyctl::db::STAGE_LOCK_NS,
                &(journeyctl::domain::Stage::Reminder1h as i32),
            ],
        )
        .await
        .unwrap();
    reset_statements(&c).await;
    let out = run_followups(&db).await;
    assert_eq!(
        calls(&c, "%pg_try_advisory_lock%").await,
        1,
        "statements looking at a stage lock"
    );
    let skipped: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("another run holds this stage's lock"))
        .collect();
    assert_eq!(skipped.len(), 1, "{}", out.stdout);
    assert!(skipped[0].contains("reminder_1h"), "{}", out.stdout);
}

#[tokio::test]
async fn followups_with_something_to_tidy_tidies_the_ledger_once_for_all_stages() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    seed_window(&c, 20, 20).await;
    // A walk-in whose person now exists: the run links it, once for all six stages.
    c.batch_execute(
        "INSERT INTO people (id, name, email) VALUES (gen_random_uuid(), 'Mara Vogt', 'mara@example.de');
         INSERT INTO cal_bookings (cal_uid, start_time, end_time, booking_kind, status, attendee_email)
         VALUES ('walk-in-1', '2026-01-01T10:00:00Z', '2026-01-01T10:50:00Z', 'full_session',
                 'ACCEPTED', 'Mara@example.de')",
    )
    .await
    .unwrap();
    reset_statements(&c).await;
    run_followups(&db).await;
    assert_eq!(calls(&c, TIDYING).await, 1, "tidying statements");
    let linked: i64 = c
        .query_one(
            "SELECT count(*) FROM cal_bookings WHERE cal_uid = 'walk-in-1' AND patient_id IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(linked, 1, "the walk-in is linked to its person");
}

/// `n` rows of the ledger that run `run` claimed and has not sent yet (24 h reminders of
/// made-up bookings); their ids.
async fn claimed_rows(c: &tokio_postgres::Client, run: uuid::Uuid, n: i32) -> Vec<uuid::Uuid> {
    c.query(
        "INSERT INTO journey_deliveries (booking_id, stage, channel, recipient_role, status,
                                         attempts, run_id)
         SELECT gen_random_uuid(), 'reminder_24h', 'email', 'patient', 'sending', 1, $1
           FROM generate_series(1, $2) RETURNING id",
        &[&run, &n],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Blocks the send-started stamp read since the last reset of the statistics.
async fn stamp_blocks(c: &tokio_postgres::Client) -> i64 {
    c.query_one(
        "SELECT coalesce(sum(shared_blks_hit + shared_blks_read), 0)::bigint
           FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
          WHERE d.datname = current_database() AND s.query LIKE '%SET send_started_at = CASE%'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn a_stamp_planned_on_an_empty_ledger_still_looks_its_rows_up_by_key_once_the_ledger_is_large(
) {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    reset_statements(&c).await;
    let pool = db.pool().await;
    let run = uuid::Uuid::new_v4();
    let session = journeyctl::db::ledger::StampSession::open(&pool)
        .await
        .unwrap();
    // A run's first batch claim on an empty ledger, and its first stamps, three messages at a
    // time: the stamp's one plan is made now, while the ledger is nearly empty.
    c.batch_execute("ANALYZE journey_deliveries").await.unwrap();
    let first = claimed_rows(&c, run, 64).await;
    for three in first.chunks(3).take(10) {
        let stamped = session.stamp(three, run, false).await.unwrap();
        assert_eq!(stamped.len(), three.len());
    }
    // Then the ledger grows: 20,000 more rows this run claimed and has not sent yet.
    claimed_rows(&c, run, 20_000).await;
    let ids: Vec<uuid::Uuid> = c
        .query(
            "SELECT id FROM journey_deliveries WHERE send_started_at IS NULL ORDER BY id LIMIT 3",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    reset_statements(&c).await;
    let stamped = session.stamp(&ids, run, false).await.unwrap();
    assert_eq!(stamped.len(), 3, "{stamped:?}");
    // Three rows found through the primary key, locked and updated (a new version in every
    // index): 60-90 index and heap pages. A scan of the ledger reads about 750, a scan of its
    // open rows (`journey_deliveries_open_idx`) about 420.
    let blocks = stamp_blocks(&c).await;
    assert!(
        blocks <= 150,
        "stamping 3 rows of a 20,000-row ledger read {blocks} blocks"
    );
    session.finish().await;
}

/// Rows of the ledger read by sequential scans so far, once `c`'s own counts are flushed (a
/// backend's counts reach the statistics when it next goes idle, forced here).
async fn ledger_rows_scanned(c: &tokio_postgres::Client) -> i64 {
    c.batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    c.batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    c.query_one(
        "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'journey_deliveries'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn recording_a_batch_of_outcomes_reads_only_its_own_rows_of_a_large_ledger() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let pool = db.pool().await;
    let run = uuid::Uuid::new_v4();
    // A young ledger of 10,000 rows this run claimed (a run of 10,000 reminders makes one);
    // a batch of 64 of them is recorded.
    let mut ids = claimed_rows(&c, run, 10_000).await;
    ids.truncate(64);
    c.batch_execute("ANALYZE journey_deliveries").await.unwrap();
    let outcomes: Vec<journeyctl::db::ledger::OwnedOutcome> = ids
        .iter()
        .map(|&delivery_id| journeyctl::db::ledger::OwnedOutcome {
            delivery_id,
            status: journeyctl::domain::DeliveryStatus::Sent,
            provider_message_id: Some("<reminder@example.de>".into()),
            error: None,
            mark_column: None,
            event: None,
        })
        .collect();
    let before = ledger_rows_scanned(&c).await;
    let client = pool.client().await.unwrap();
    journeyctl::db::ledger::record_batch(&client, &outcomes, at(NOW))
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    let scanned = ledger_rows_scanned(&c).await - before;
    let sent: i64 = c
        .query_one(
            "SELECT count(*) FROM journey_deliveries WHERE id = ANY($1) AND status = 'sent'",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sent, 64);
    // The 64 rows are found through the primary key; a scan of the ledger reads all 10,000.
    assert_eq!(
        scanned, 0,
        "recording 64 outcomes in a 10,000-row ledger scanned {scanned} rows of it"
    );
}

/// Runs `reminder-24h` at 4 sends at once while the relay holds every message, calls
/// `while_held` once the first 4 are held, then lets the relay answer; checks that every due
/// booking got its reminder once.
async fn with_sends_held(
    db: &TestDb,
    due: usize,
    while_held: impl std::future::Future<Output = ()>,
) {
    let tr = Transports::start().await;
    tr.smtp.close_gate();
    let mut cli = tr.apply_email_only(db.cmd());
    cli.args(["--now", NOW, "reminder-24h", "--concurrency", "4"]);
    let child = cli.spawn();
    tokio::task::block_in_place(|| tr.smtp.wait_held(4));
    while_held.await;
    tr.smtp.open_gate();
    let out = child.wait_with_output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for m in tr.emails() {
        *per_recipient.entry(m.to[0].clone()).or_default() += 1;
    }
    assert_eq!(per_recipient.len(), due);
    assert!(per_recipient.values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_claimed_while_the_sends_of_this_one_wait_for_the_relay() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    seed_window(&c, 150, 0).await;
    // Batches of 64: while the first batch's sends are held, the second is claimed too.
    let what = "rows claimed while the first batch's sends were held";
    let claimed = wait_for_count(128, what, || rows(&c));
    with_sends_held(&db, 150, claimed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_page_is_selected_while_the_sends_of_this_one_wait_for_the_relay() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    // Pages of 500: a second page of one booking.
    seed_window(&c, 501, 0).await;
    reset_statements(&c).await;
    let what = "pages selected while the first page's sends were held";
    let selected = wait_for_count(2, what, || calls(&c, "%AS page_key%"));
    with_sends_held(&db, 501, selected).await;
}
