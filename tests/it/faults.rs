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

/// Throwaway clusters (`journeyctl-pg-*`) left in a directory.
fn clusters_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("journeyctl-pg-"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_demo_killed_with_its_whole_process_group_leaves_no_postgresql_behind() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncBufReadExt;
    // The demo's temporary directory, shared like /tmp: the cluster runs (and is removed)
    // as the postgres user.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = tmp.path().join("out");
    let mut cli = crate::harness::Cli::new();
    cli.env("TMPDIR", tmp.path())
        .args(["demo", "--out"])
        .arg(&out);
    // Its own process group, as a shell gives a foreground job: Ctrl-C, or systemd/a
    // supervisor killing the group, reaches every process in it at once.
    cli.stdin_bytes().process_group(0);
    let mut child = cli.spawn();
    let pgid = child.id().unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = stderr
            .next_line()
            .await
            .unwrap()
            .expect("the demo ended before its simulation started");
        if line.contains("simulating") {
            break;
        }
    }
    assert_eq!(clusters_in(tmp.path()).len(), 1, "the demo's cluster is up");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().await.unwrap();
    // The cluster's own watchdog stops the server and removes its directory.
    let mut polls: u64 = 0;
    while !clusters_in(tmp.path()).is_empty() {
        polls += 1;
        assert!(
            polls < 1_000_000,
            "the killed demo left its PostgreSQL behind: {:?}",
            clusters_in(tmp.path())
        );
        tokio::task::yield_now().await;
    }
}

/// Every way the fixture bodies can be bent: each string and number replaced by hostile
/// values (NUL, control characters, a 100 KiB string, wrong types, huge numbers), one field at
/// a time.
fn hostile_bodies() -> Vec<Vec<u8>> {
    fn paths(v: &serde_json::Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, child) in m {
                    let mut p = at.clone();
                    p.push(k.clone());
                    out.push(p.clone());
                    paths(child, p, out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let mut p = at.clone();
                    p.push(i.to_string());
                    out.push(p.clone());
                    paths(child, p, out);
                }
            }
            _ => {}
        }
    }
    fn set(v: &mut serde_json::Value, path: &[String], new: serde_json::Value) {
        let mut cur = v;
        for key in path {
            cur = match cur {
                serde_json::Value::Object(m) => m.get_mut(key).unwrap(),
                serde_json::Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
                _ => unreachable!(),
            };
        }
        *cur = new;
    }
    let hostile = [
        serde_json::json!("a\u{0}b"),
        serde_json::json!("Zeile\r\nBcc: x@example.org\u{7}\u{202e}"),
        serde_json::json!("x".repeat(100 * 1024)),
        serde_json::json!(null),
        serde_json::json!(-1),
        serde_json::json!(1e308),
        serde_json::json!(u64::MAX),
        serde_json::json!([{"a": "\u{0}"}]),
        serde_json::json!({"\u{0}": true}),
        serde_json::json!("9999-99-99T99:99:99Z"),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cal");
    let mut out = Vec::new();
    for name in [
        "booking_created_full.json",
        "booking_rescheduled.json",
        "booking_cancelled.json",
        "meeting_ended_flat.json",
    ] {
        let base: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
        let mut all = Vec::new();
        paths(&base, Vec::new(), &mut all);
        for (i, path) in all.iter().enumerate() {
            let mut body = base.clone();
            set(&mut body, path, hostile[i % hostile.len()].clone());
            out.push(serde_json::to_vec(&body).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn no_bent_webhook_body_makes_the_webhook_panic_or_fail_inside() {
    let db = TestDb::migrated().await;
    let tmp = tempfile::tempdir().unwrap();
    let bodies = hostile_bodies();
    assert!(bodies.len() > 100, "{} bodies", bodies.len());
    let outcomes: Vec<_> = futures::stream::iter(bodies.into_iter().enumerate())
        .map(|(i, body)| {
            let file = tmp.path().join(format!("body-{i}.json"));
            std::fs::write(&file, &body).unwrap();
            let mut cli = db.cmd();
            cli.env("EMAIL_OUTBOX_DIR", tmp.path())
                .env("EMAIL_FROM", "Praxis <termine@example.de>")
                .args(["--json", "webhook", "--no-verify", "--file"])
                .arg(&file);
            async move { (i, cli.run().await) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (i, out) in outcomes {
        assert!(!out.stderr.contains("panicked"), "body {i}: {}", out.stderr);
        assert!(matches!(out.code, 0..=2), "body {i} exited {}", out.code);
        // Bad values are refused (400) or become warnings; never a failure inside (500).
        let report = out.json();
        assert_ne!(report["status"], 500, "body {i}: {report}");
    }
}
