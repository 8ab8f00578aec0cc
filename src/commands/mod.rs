//! One function per subcommand that is not a stage: each builds what it needs from the typed
//! configuration, does its work through `db`/`stages`/`webhook`, prints its report and returns
//! the exit status. Business rules live in the modules they call, not here.

mod migrate;

pub use migrate::migrate;
