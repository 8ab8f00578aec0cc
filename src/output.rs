//! Standard output of the commands: reports and tables for the operator.
//!
//! A reader that goes away early (`journeyctl status | head -1`) is not a failure of ours:
//! the rest of the output is dropped quietly and the command finishes with the exit status
//! its work earned. Any other write error is logged once. Logs never go here (stderr).

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout refused a write: everything after it is dropped.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to stdout (what `println!` does, without its panic on a closed pipe).
pub(crate) fn line(args: fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            log::warn!("cannot write to standard output: {e}; the rest of the report is dropped");
        }
    }
}

/// `println!` for command output: see [`line`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
