//! Retention of raw webhook bodies (issue: "Privacy and hardening"): `journeyctl prune`
//! removes bodies past the retention period and keeps what duplicate detection needs.

use crate::harness::TestDb;
use crate::seed::at;

const NOW: &str = "2026-03-09T15:00:00Z";

async fn receipt(c: &tokio_postgres::Client, days_ago: i64, hash: &str) {
    c.execute(
        "INSERT INTO cal_webhook_receipts
           (received_at, trigger_event, cal_uid, body_sha256, signature_ok, outcome, body)
         VALUES ($1, 'BOOKING_CREATED', 'uid-1', $2, true, 'applied',
                 '{\"payload\":{\"attendees\":[{\"email\":\"jonas.weber@example.de\"}]}}')",
        &[&(at(NOW) - chrono::Duration::days(days_ago)), &hash],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn prune_removes_raw_webhook_bodies_past_retention_and_keeps_their_hashes() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    receipt(&c, 45, "old-a").await;
    receipt(&c, 31, "old-b").await;
    receipt(&c, 2, "recent").await;

    let out = db.cmd().args(["--now", NOW, "prune"]).run().await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains('2'),
        "reports what it pruned: {}",
        out.stdout
    );
    assert_eq!(
        db.count("SELECT count(*) FROM cal_webhook_receipts WHERE body IS NULL")
            .await,
        2
    );
    assert_eq!(
        db.count(
            "SELECT count(*) FROM cal_webhook_receipts
             WHERE body IS NOT NULL AND body_sha256 = 'recent'"
        )
        .await,
        1
    );
    // The hashes stay: a redelivered body is still recognised as a duplicate.
    assert_eq!(
        db.count("SELECT count(*) FROM cal_webhook_receipts WHERE body_sha256 LIKE 'old-%'")
            .await,
        2
    );

    // A shorter retention, as a flag; a second run finds nothing more of the old ones.
    let out = db
        .cmd()
        .args(["--now", NOW, "--json", "prune", "--retention", "1d"])
        .run()
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["pruned"], 1, "{}", out.stdout);

    // A retention below a day would cut into Cal.com's own retries and replays: refused.
    let out = db
        .cmd()
        .args(["--now", NOW, "prune", "--retention", "5m"])
        .run()
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--retention"), "{}", out.stderr);
}
