//! `reminder-24h` and `reminder-1h`: who is reminded, by which channels. The selection
//! (active bookings starting inside the window) is in `db::bookings`.

use super::plan::{base_context, check_recipient, patient_email_and_sms, Plan, PlanInput};
use crate::domain::{Counter, MessageKind};

pub fn plan(input: &PlanInput<'_>, kind: MessageKind) -> Plan {
    let patient = match check_recipient(input) {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let Some(context) = base_context(input, Some(patient)) else {
        return Plan::skip(Counter::SkippedInactive, "booking has no start time");
    };
    patient_email_and_sms(input, patient, kind, context)
}
