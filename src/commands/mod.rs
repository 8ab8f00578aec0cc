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

pub(crate) use audit::audit;
pub(crate) use demo::demo;
pub(crate) use migrate::migrate;
pub(crate) use preview::preview;
pub(crate) use prune::prune;
pub(crate) use reconcile::{run as reconcile, Options as ReconcileOptions};
pub(crate) use resolve::resolve;
pub(crate) use stage::{journey, run as run_stages, StageCommand, StageRun};
pub(crate) use status::status;
pub(crate) use suppress::suppress;
pub(crate) use webhook::{replay, serve, webhook};
