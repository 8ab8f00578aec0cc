//! Faults an operator can cause or meet (issue: "Faults: never hang, never lose silently"):
//! absurd flag values, and what the logs may show at any verbosity.

use futures::StreamExt;

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

/// Values an operator at 3 a.m. (or a broken script) may pass to any flag.
const HOSTILE_VALUES: &[&str] = &[
    "",
    "-",
    "0",
    "-1",
    "1e9",
    "99999999999999999999",
    "100000000d",
    "-100000000d",
    "9223372036854775807s",
    "1ms",
    "3d2h",
    "5 m",
    "PT5M",
    "NaN",
    "\u{1f600}",
    "ß\u{202e}x",
    "null",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "2026-02-30T10:00:00Z",
];

#[tokio::test]
async fn no_flag_value_makes_any_command_panic() {
    let db = TestDb::migrated().await;
    let out_dir = tempfile::tempdir().unwrap();
    let outbox = out_dir.path().to_str().unwrap().to_string();
    // (arguments before the value, arguments after it); every command that could send runs
    // dry or into an outbox, so nothing leaves the machine.
    let shapes: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["reminder-24h", "--dry-run", "--window-start"], vec![]),
        (vec!["intro-followup", "--dry-run", "--window-end"], vec![]),
        (vec!["reminder-1h", "--dry-run", "--limit"], vec![]),
        (
            vec!["session-followup", "--dry-run", "--concurrency"],
            vec![],
        ),
        (vec!["followups", "--dry-run", "--stages"], vec![]),
        (vec!["followups", "--dry-run", "--limit"], vec![]),
        (vec!["status", "--since"], vec![]),
        (vec!["audit", "--days"], vec![]),
        (vec!["prune", "--retention"], vec![]),
        (vec!["resolve"], vec!["--as", "sent"]),
        (
            vec!["resolve", "00000000-0000-0000-0000-000000000000", "--as"],
            vec![],
        ),
        (vec!["--now"], vec!["status"]),
        (vec!["webhook", "--no-verify", "--file"], vec![]),
        (vec!["webhook", "--signature"], vec!["--file", "/dev/null"]),
    ];
    let cases: Vec<(&Vec<&str>, &str, &Vec<&str>)> = shapes
        .iter()
        .flat_map(|(b, a)| HOSTILE_VALUES.iter().map(move |v| (b, *v, a)))
        .collect();
    assert_eq!(cases.len(), shapes.len() * HOSTILE_VALUES.len());
    let outcomes: Vec<_> = futures::stream::iter(cases)
        .map(|(before, value, after)| {
            let mut cli = db.cmd();
            cli.env("EMAIL_OUTBOX_DIR", &outbox)
                .env("EMAIL_FROM", "Praxis <termine@example.de>")
                .env("CAL_WEBHOOK_SECRET", "whsec_x")
                .args(before)
                .arg(value)
                .args(after);
            async move { (before, value, after, cli.run().await) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (before, value, after, out) in outcomes {
        assert!(
            matches!(out.code, 0..=2),
            "{before:?} {value:?} {after:?} exited {}: {}",
            out.code,
            out.stderr
        );
        assert!(
            !out.stderr.contains("panicked"),
            "{before:?} {value:?} {after:?}: {}",
            out.stderr
        );
    }
}
