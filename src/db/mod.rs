//! The SQL of the journey: one async fn per query, typed rows in and out. All SQL lives here
//! (the stage lock in `locks`, the demo's seeding in `demo`, `serve`'s health ping in
//! `Db::ping`); strings become the `domain` enums where a row is read.
//!
//! Every call returns its error with context; a failed lookup is never turned into "no row".
//! Eligibility queries compare with bound `$n::timestamptz` parameters (the run's clock), never
//! with `now()`.

pub mod bookings;
pub mod demo;
pub mod ledger;
pub mod locks;
pub mod migrate;
mod pool;
pub mod reconcile;
pub mod reports;
pub mod retention;
pub mod runs;
pub mod sms;
pub mod suppressions;
pub mod webhook;

pub use pool::{connect, connect_as, Db, Unreachable};
pub use pool::{SERVE_CONFIRM_CONNECTIONS, SERVE_CONFIRM_WORKERS, SERVE_INGEST_CONNECTIONS};
