//! One function per subcommand: each builds what it needs from the typed configuration, does
//! its work through `db`/`stages`/`webhook`, prints its report and returns the exit status.
//! The stage commands and `followups` share one runner, `stage::run` (`run_stages`:
//! deadline, signals, report, metrics). What an operator runs to watch and settle the journey
//! is `status`, `audit` and `resolve` (queries in `db::reports`). Business rules live in the
//! modules they call, not here.

mod audit;
mod demo;
mod migrate;
mod preview;
mod prune;
mod reconcile;
mod resolve;
mod stage;
mod status;
mod suppress;
mod twilio_status;
mod unsubscribe;
mod webhook;

pub use audit::audit;
pub use demo::demo;
pub use migrate::migrate;
pub use preview::preview;
pub use prune::prune;
pub use reconcile::{run as reconcile, Options as ReconcileOptions};
pub use resolve::resolve;
pub use stage::{journey, run as run_stages, StageCommand, StageRun};
pub use status::status;
pub use suppress::suppress;
pub use webhook::{replay, serve, webhook};
