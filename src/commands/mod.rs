//! One function per subcommand: each builds what it needs from the typed configuration, does
//! its work through `db`/`stages`/`webhook`, prints its report and returns the exit status.
//! The stage commands and `followups` share one runner, `stage::run` (`run_stages`:
//! deadline, signals, report, metrics). Business rules live in the modules they call, not here.

mod demo;
mod migrate;
mod ops;
mod preview;
mod prune;
mod reconcile;
mod stage;
mod suppress;
mod twilio_status;
mod unsubscribe;
mod webhook;

pub use demo::demo;
pub use migrate::migrate;
pub use ops::{audit, resolve, status};
pub use preview::preview;
pub use prune::prune;
pub use reconcile::{run as reconcile, Options as ReconcileOptions};
pub use stage::{journey, run as run_stages, StageCommand, StageRun};
pub use suppress::suppress;
pub use webhook::{replay, serve, webhook};
