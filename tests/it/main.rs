//! The one integration test binary: every test talks to a real PostgreSQL (see `harness`),
//! real SMTP and HTTP peers, and the compiled `journeyctl` binary.

mod content;
mod coverage;
mod exactly_once;
mod faults;
mod followups;
mod harness;
mod ingest_faults;
mod journey_rules;
mod lifecycle;
mod migrate;
mod notify;
mod operators;
mod ops;
mod retention;
mod run_faults;
mod seed;
mod smtp_faults;
mod speed;
mod stages;
mod transports;
mod webhook;
