//! The one integration test binary: every test talks to a real PostgreSQL (see `harness`),
//! real SMTP and HTTP peers, and the compiled `journeyctl` binary.

#![allow(unreachable_pub)] // the test crate's helpers are private to it

mod batch_claims;
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
mod optout;
mod quiet_hours;
mod reconcile;
mod retention;
mod run_faults;
mod seed;
mod sms_status;
mod smtp_faults;
mod smtp_pipelining;
mod smtp_tls;
mod speed;
mod speed_ingest;
mod stages;
mod support;
mod tls_relay;
mod transports;
mod unsubscribe_browser;
mod webhook;
