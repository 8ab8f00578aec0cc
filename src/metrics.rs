//! The run's counters in the Prometheus text exposition format, for node_exporter's textfile
//! collector: one gauge per stage and counter, plus the run's exit status and instant. The
//! file is replaced atomically (written beside it, then renamed), so the collector never reads
//! half a file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::domain::Counters;
use crate::exit::ExitStatus;

/// The exposition text of one run: `stages` are the run's stage ids with their counters.
pub(crate) fn render(
    command: &str,
    now: DateTime<Utc>,
    dry_run: bool,
    status: ExitStatus,
    stages: &[(&str, &Counters)],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP journeyctl_stage_count Counters of the last run of each stage (processed, sent_email, skipped_*, errors, ...)."
    );
    let _ = writeln!(out, "# TYPE journeyctl_stage_count gauge");
    for (stage, counters) in stages {
        for (counter, n) in counters.iter() {
            let _ = writeln!(
                out,
                "journeyctl_stage_count{{command=\"{command}\",stage=\"{}\",counter=\"{}\"}} {n}",
                stage,
                counter.as_str()
            );
        }
    }
    let _ = writeln!(out, "# HELP journeyctl_run_exit_status Exit status of the last run (0 ok, 1 failed deliveries or errors, 2 configuration).");
    let _ = writeln!(out, "# TYPE journeyctl_run_exit_status gauge");
    let _ = writeln!(
        out,
        "journeyctl_run_exit_status{{command=\"{command}\",dry_run=\"{dry_run}\"}} {}",
        status.code()
    );
    let _ = writeln!(out, "# HELP journeyctl_run_timestamp_seconds The instant the last run judged against (--now or the clock).");
    let _ = writeln!(out, "# TYPE journeyctl_run_timestamp_seconds gauge");
    let _ = writeln!(
        out,
        "journeyctl_run_timestamp_seconds{{command=\"{command}\"}} {}",
        now.timestamp()
    );
    out
}

pub(crate) fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journeyctl.prom".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
