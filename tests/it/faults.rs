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
