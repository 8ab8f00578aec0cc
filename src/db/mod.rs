//! All SQL lives below this module: one async fn per query, typed rows in and out.
//!
//! Every call returns its error with context; a failed lookup is never turned into "no row".
//! Eligibility queries compare with bound `$n::timestamptz` parameters (the run's clock), never
//! with `now()`.

pub mod bookings;
pub mod ledger;
pub mod migrate;
pub mod ops;
mod pool;
pub mod reconcile;
pub mod retention;
pub mod runs;
pub mod sms;
pub mod suppressions;
pub mod webhook;

pub use pool::{connect, connect_as, Db, Unreachable};
pub use pool::{SERVE_CONFIRM_CONNECTIONS, SERVE_CONFIRM_WORKERS, SERVE_INGEST_CONNECTIONS};
