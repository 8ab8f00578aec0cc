//! Cal.com webhooks and Twilio's status callbacks, from the raw body to the database.
//!
//! [`verify`] checks a Cal.com signature on the raw body and [`parse`] turns a verified body
//! into a [`CalEvent`]; [`twilio_status`] checks and reads a Twilio callback. These three are
//! pure: no I/O, no database, no clock, no logging. [`apply`] is not: it stores the receipt,
//! applies the event to the database (through `db::webhook`) in one transaction, writes an
//! `error` event when that fails (`db::runs`) and logs warnings; it takes the instant from its
//! caller and sends nothing. The HTTP listener is `commands::webhook` (`serve`). The path of a
//! body is drawn in docs/ARCHITECTURE.md.

pub(crate) mod apply;
pub(crate) mod parse;
pub(crate) mod twilio_status;
pub mod verify;

pub use parse::{parse, Attendee, CalEvent, KhMetadata, ParseError, Trigger};
pub use verify::{sign, verify_signature, VerifyError, SIGNATURE_HEADER};

/// The signed bodies in `tests/fixtures/cal/`, compiled in so unit tests see exactly the bytes
/// on disk, whatever the working directory.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::HashMap;

    pub(crate) const SECRET: &str = "whsec_journeyctl_test_0001";

    macro_rules! fixture {
        ($file:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/cal/",
                $file
            ))
        };
    }

    pub(crate) const BOOKING_CREATED_INTRO: &[u8] = fixture!("booking_created_intro.json");
    pub(crate) const BOOKING_CREATED_FULL: &[u8] = fixture!("booking_created_full.json");
    pub(crate) const BOOKING_RESCHEDULED: &[u8] = fixture!("booking_rescheduled.json");
    pub(crate) const BOOKING_CANCELLED: &[u8] = fixture!("booking_cancelled.json");
    pub(crate) const BOOKING_CANCELLED_REQUEST_RESCHEDULE: &[u8] =
        fixture!("booking_cancelled_request_reschedule.json");
    pub(crate) const MEETING_ENDED_FLAT: &[u8] = fixture!("meeting_ended_flat.json");
    pub(crate) const BOOKING_NO_SHOW_UPDATED: &[u8] = fixture!("booking_no_show_updated.json");
    pub(crate) const PING: &[u8] = fixture!("ping.json");
    pub(crate) const UNKNOWN_TRIGGER: &[u8] = fixture!("unknown_trigger.json");

    pub(crate) const ALL: [(&str, &[u8]); 9] = [
        ("booking_created_intro.json", BOOKING_CREATED_INTRO),
        ("booking_created_full.json", BOOKING_CREATED_FULL),
        ("booking_rescheduled.json", BOOKING_RESCHEDULED),
        ("booking_cancelled.json", BOOKING_CANCELLED),
        (
            "booking_cancelled_request_reschedule.json",
            BOOKING_CANCELLED_REQUEST_RESCHEDULE,
        ),
        ("meeting_ended_flat.json", MEETING_ENDED_FLAT),
        ("booking_no_show_updated.json", BOOKING_NO_SHOW_UPDATED),
        ("ping.json", PING),
        ("unknown_trigger.json", UNKNOWN_TRIGGER),
    ];

    /// `signatures.txt`: one `file hex` pair per line.
    pub(crate) fn signatures() -> HashMap<&'static str, String> {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cal/signatures.txt"
        ))
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(file, sig)| (file, sig.trim().to_string()))
        .collect()
    }
}
