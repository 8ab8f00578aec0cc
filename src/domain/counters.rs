//! The counters of a stage run: what became of every booking and message it looked at.
//! Reported by `--json`, stored in `journey_runs`, summed by `status`; see [`Counter`].

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// One counter of a stage run (in `--json` reports, `journey_runs` and `status`). Every booking a stage selects ends in `processed`
/// plus at least one outcome counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    Processed,
    SentEmail,
    SentSms,
    SkippedAlreadySent,
    SkippedNoPatient,
    SkippedNoContact,
    SkippedInvalidPhone,
    SkippedInactive,
    SkippedTest,
    SkippedNoAvailability,
    SkippedAlreadyBooked,
    SkippedHasSuccessfulBooking,
    SkippedNoOtherMatches,
    SkippedRecentlyRecovered,
    /// The recipient opted out on this channel (STOP reply, unsubscribe, operator).
    SkippedOptedOut,
    /// An SMS that quiet hours would have delivered too late to be of use.
    SkippedQuietHours,
    RetryScheduled,
    InDoubt,
    /// `retry` deliveries whose window closed before they could be sent (terminal).
    Expired,
    Errors,
}

impl Counter {
    pub const ALL: [Counter; 20] = [
        Counter::Processed,
        Counter::SentEmail,
        Counter::SentSms,
        Counter::SkippedAlreadySent,
        Counter::SkippedNoPatient,
        Counter::SkippedNoContact,
        Counter::SkippedInvalidPhone,
        Counter::SkippedInactive,
        Counter::SkippedTest,
        Counter::SkippedNoAvailability,
        Counter::SkippedAlreadyBooked,
        Counter::SkippedHasSuccessfulBooking,
        Counter::SkippedNoOtherMatches,
        Counter::SkippedRecentlyRecovered,
        Counter::SkippedOptedOut,
        Counter::SkippedQuietHours,
        Counter::RetryScheduled,
        Counter::InDoubt,
        Counter::Expired,
        Counter::Errors,
    ];

    /// A booking or message that was not sent for a counted reason (not a failure).
    pub fn is_skip(self) -> bool {
        match self {
            Counter::SkippedAlreadySent
            | Counter::SkippedNoPatient
            | Counter::SkippedNoContact
            | Counter::SkippedInvalidPhone
            | Counter::SkippedInactive
            | Counter::SkippedTest
            | Counter::SkippedNoAvailability
            | Counter::SkippedAlreadyBooked
            | Counter::SkippedHasSuccessfulBooking
            | Counter::SkippedNoOtherMatches
            | Counter::SkippedRecentlyRecovered
            | Counter::SkippedOptedOut
            | Counter::SkippedQuietHours => true,
            Counter::Processed
            | Counter::SentEmail
            | Counter::SentSms
            | Counter::RetryScheduled
            | Counter::InDoubt
            | Counter::Expired
            | Counter::Errors => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Processed => "processed",
            Counter::SentEmail => "sent_email",
            Counter::SentSms => "sent_sms",
            Counter::SkippedAlreadySent => "skipped_already_sent",
            Counter::SkippedNoPatient => "skipped_no_patient",
            Counter::SkippedNoContact => "skipped_no_contact",
            Counter::SkippedInvalidPhone => "skipped_invalid_phone",
            Counter::SkippedInactive => "skipped_inactive",
            Counter::SkippedTest => "skipped_test",
            Counter::SkippedNoAvailability => "skipped_no_availability",
            Counter::SkippedAlreadyBooked => "skipped_already_booked",
            Counter::SkippedHasSuccessfulBooking => "skipped_has_successful_booking",
            Counter::SkippedNoOtherMatches => "skipped_no_other_matches",
            Counter::SkippedRecentlyRecovered => "skipped_recently_recovered",
            Counter::SkippedOptedOut => "skipped_opted_out",
            Counter::SkippedQuietHours => "skipped_quiet_hours",
            Counter::RetryScheduled => "retry_scheduled",
            Counter::InDoubt => "in_doubt",
            Counter::Expired => "expired",
            Counter::Errors => "errors",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// All counters of one stage run (or the totals of several), zero when unused.
/// Serialises as a flat JSON object with every counter present.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters([u64; 20]);

impl Counters {
    pub fn add(&mut self, c: Counter, n: u64) {
        self.0[c.index()] += n;
    }
    pub fn bump(&mut self, c: Counter) {
        self.add(c, 1);
    }
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c.index()]
    }
    pub fn merge(&mut self, other: &Counters) {
        for c in Counter::ALL {
            self.add(c, other.get(c));
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.into_iter().map(|c| (c, self.get(c)))
    }
    /// Rebuilds counters from a JSON object written by `Serialize`; unknown keys are ignored.
    pub fn from_json(v: &serde_json::Value) -> Counters {
        let mut out = Counters::default();
        for c in Counter::ALL {
            if let Some(n) = v.get(c.as_str()).and_then(|x| x.as_u64()) {
                out.add(c, n);
            }
        }
        out
    }
}

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(Counter::ALL.len()))?;
        for (c, n) in self.iter() {
            m.serialize_entry(c.as_str(), &n)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_serialised_even_when_zero() {
        let mut c = Counters::default();
        c.bump(Counter::SentSms);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v.as_object().unwrap().len(), Counter::ALL.len());
        assert_eq!(v["sent_sms"], 1);
        assert_eq!(v["errors"], 0);
        assert_eq!(Counters::from_json(&v), c);
    }
}
