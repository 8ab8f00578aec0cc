use crate::harness::{Cli, TestDb};

#[tokio::test]
async fn migrate_twice_is_a_no_op_the_second_time() {
    let db = TestDb::empty().await;
    let first = db.cmd().arg("migrate").run().await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first.stdout.contains("applied V1__journey_schema"),
        "{}",
        first.stdout
    );
    let tables_before = db
        .count("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'")
        .await;

    let second = db.cmd().args(["--json", "migrate"]).run().await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.json()["applied"], serde_json::json!([]));
    let tables_after = db
        .count("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'")
        .await;
    assert_eq!(tables_before, tables_after);
    for t in [
        "people",
        "therapists",
        "matches",
        "cal_slots_cache",
        "cal_bookings",
        "events",
        "journey_deliveries",
        "journey_runs",
    ] {
        assert_eq!(
            db.count(&format!(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = '{t}'"
            ))
            .await,
            1,
            "table {t} missing"
        );
    }
}

#[tokio::test]
async fn migrate_upgrades_a_smaller_existing_schema_without_losing_rows() {
    let db = TestDb::empty().await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE people (id uuid PRIMARY KEY, name text, email text);
             CREATE TABLE therapists (id uuid PRIMARY KEY, first_name text, cal_username text);
             CREATE TABLE matches (id uuid PRIMARY KEY, patient_id uuid, therapist_id uuid);
             CREATE TABLE cal_bookings (id uuid PRIMARY KEY, cal_uid text NOT NULL UNIQUE,
                                        start_time timestamptz, status text);
             INSERT INTO people VALUES ('7b1f3c2e-5a4d-4c8e-9f10-2a3b4c5d6e7f', 'Jonas Weber', 'jonas@example.de');
             INSERT INTO therapists VALUES ('3c9d8e7f-6a5b-4c4d-8e2f-1a0b9c8d7e6f', 'Lena', 'lena-brandt');
             INSERT INTO matches VALUES (gen_random_uuid(), '7b1f3c2e-5a4d-4c8e-9f10-2a3b4c5d6e7f', '3c9d8e7f-6a5b-4c4d-8e2f-1a0b9c8d7e6f');
             INSERT INTO cal_bookings VALUES (gen_random_uuid(), 'old-uid-1', '2026-03-10T15:00:00Z', 'accepted');",
        )
        .await
        .unwrap();

    let out = db.cmd().arg("migrate").run().await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    let c = db.client().await;
    let row = c
        .query_one(
            "SELECT p.name, p.email, p.metadata, b.status, b.is_test, b.reminder_24h_sent_at IS NULL,
                    t.cal_username, m.secure_uuid IS NOT NULL
             FROM people p, cal_bookings b, therapists t, matches m",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Jonas Weber");
    assert_eq!(row.get::<_, String>(1), "jonas@example.de");
    assert_eq!(row.get::<_, serde_json::Value>(2), serde_json::json!({}));
    assert_eq!(row.get::<_, String>(3), "accepted");
    assert!(!row.get::<_, bool>(4));
    assert!(row.get::<_, bool>(5));
    assert_eq!(row.get::<_, String>(6), "lena-brandt");
    assert!(row.get::<_, bool>(7));

    // And the upgraded schema takes the program's rows.
    c.batch_execute(
        "INSERT INTO journey_deliveries (booking_id, stage, channel, recipient_role, status)
         SELECT id, 'reminder_24h', 'email', 'patient', 'sent' FROM cal_bookings",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unreachable_database_exits_2_with_a_clear_message() {
    let port = crate::support::free_port();
    // Nothing listens on a port we just released.
    let out = Cli::new()
        .args([
            "--database-url",
            &format!("postgres://app:hunter2@127.0.0.1:{port}/journey"),
            "migrate",
        ])
        .run()
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot reach the database"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("hunter2"),
        "password leaked: {}",
        out.stderr
    );
}

#[tokio::test]
async fn a_malformed_database_url_exits_2_and_names_the_variable() {
    let out = Cli::new()
        .env(
            "DATABASE_URL",
            "postgres://app:hunter2@127.0.0.1:notaport/journey",
        )
        .arg("migrate")
        .run()
        .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("DATABASE_URL"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("hunter2"),
        "password leaked: {}",
        out.stderr
    );

    let missing = Cli::new().arg("migrate").run().await;
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("DATABASE_URL is not set"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn sslmode_require_connects_over_tls_to_a_self_signed_server() {
    let db = TestDb::empty().await;
    assert!(
        db.server_has_tls(),
        "the throwaway test server has no TLS (openssl missing?) or JOURNEY_TEST_DATABASE_URL \
         points to a server without TLS"
    );
    let pool = journeyctl::db::connect(
        &journeyctl::secret::Secret::new(format!("{}?sslmode=require", db.url)),
        1,
    )
    .await
    .expect("TLS connect with sslmode=require");
    let client = pool.client().await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "connection is not encrypted");
}
