//! The exit status of every command, as the README's "Exit status" paragraph and `--help`
//! describe it. Used by `main` and by every command; depends on nothing else in the crate.

/// Exit status of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    /// All good, nothing due, or another run held the lock.
    Ok = 0,
    /// A delivery failed or an error was counted.
    Failed = 1,
    /// Usage or configuration error, or the database could not be reached.
    Config = 2,
    /// Stopped by SIGINT (128 + 2), after draining in-flight sends.
    Interrupted = 130,
    /// Stopped by SIGTERM (128 + 15), after draining in-flight sends.
    Terminated = 143,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }
}
