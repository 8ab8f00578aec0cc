//! The journey's vocabulary: stages, channels, delivery states, counters and the contact
//! newtypes that can only be built by parsing.
//!
//! This module depends on nothing else in the crate and does no I/O. Every conversion between
//! these enums and their database text happens here, in `as_str`/`parse`, and nowhere else.

mod booking_status;
mod contact;
mod counters;
pub(crate) mod dates;
pub(crate) mod display_name;
mod event;
pub mod gsm7;
mod ledger_stage;
pub mod quiet_hours;
mod sms_status;
mod stage;
mod webhook_outcome;

pub use booking_status::{next_status, BookingStatus, EventOrder, StatusEvent, UnknownStatus};
pub use contact::{mask_email, mask_phone, EmailAddress, PhoneNumber};
pub use counters::{Counter, Counters};
pub use event::{EventKind, EventLevel};
pub use ledger_stage::LedgerStage;
pub use sms_status::SmsStatus;
pub use stage::{
    mark_column, Anchor, BookingKind, Channel, DeliveryStatus, MessageKind, RecipientRole,
    RowFacts, Selection, Stage, StageFacts, StatusRule,
};
pub use webhook_outcome::WebhookOutcome;
