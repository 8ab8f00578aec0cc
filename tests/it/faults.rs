//! Faults an operator can cause or meet (issue: "Faults: never hang, never lose silently"):
//! absurd flag values, and what the logs may show at any verbosity.

use crate::harness::TestDb;

#[tokio::test]
async fn absurdly_large_durations_exit_2_naming_the_flag_instead_of_panicking() {
    let db = TestDb::migrated().await;
    for (args, flag) in [
        (
            vec!["reminder-24h", "--dry-run", "--window-end", "100000000d"],
            "--window-end",
        ),
        (
            vec![
                "intro-followup",
                "--dry-run",
                "--window-start",
                "100000000d",
            ],
            "--window-start",
        ),
        (vec!["status", "--since", "100000000d"], "--since"),
        (vec!["audit", "--days", "4000000000"], "--days"),
    ] {
        let out = db.cmd().args(&args).run().await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(flag),
            "{args:?} does not name {flag}: {}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn the_most_verbose_logs_never_show_a_patients_name_email_or_phone() {
    use crate::seed::{self, at, Booking};
    use chrono::Duration;
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let tr = crate::transports::Transports::start().await;
    let t = seed::therapist(&c, "lena-brandt").await;
    let p = seed::patient(
        &c,
        "Wilhelmine Quastenberg",
        Some("wilhelmine.q@example.de"),
        Some("+4915198765432"),
    )
    .await;
    let now = at("2026-03-09T15:00:00Z");
    Booking::new(t, p, now + Duration::hours(24))
        .insert(&c)
        .await;
    // A dry run at trace level, then the real sends (render, SMTP, Twilio) at -vv.
    for (verbosity, rust_log, dry) in [("-v", Some("trace"), true), ("-vv", None, false)] {
        let mut cli = tr.apply(db.cmd());
        cli.args(["--now", &now.to_rfc3339(), verbosity, "reminder-24h"]);
        if dry {
            cli.arg("--dry-run");
        }
        match rust_log {
            Some(level) => {
                cli.env("RUST_LOG", level);
            }
            None => {
                cli.stdin_bytes().env_remove("RUST_LOG");
            }
        }
        let out = cli.run().await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stderr.contains("DEBUG"), "not verbose: {}", out.stderr);
        for secret in ["Wilhelmine", "Quastenberg", "wilhelmine.q@", "98765432"] {
            assert!(
                !out.stderr.contains(secret),
                "{verbosity} {rust_log:?} logs {secret:?}"
            );
        }
    }
    // The real run did send: its logs were really exercised.
    assert_eq!(tr.emails().len(), 1);
}
