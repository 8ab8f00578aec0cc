//! The one integration test binary: every test talks to a real PostgreSQL (see `harness`),
//! real SMTP and HTTP peers, and the compiled `journeyctl` binary.

mod harness;
mod migrate;
