//! Calendar-day rules in the configured zone: pure date arithmetic on the run's instant, used by
//! the stages' decisions (e.g. whether a reminder says "morgen").

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// Whether `start` falls on the calendar day after `now`'s, both in `tz`.
pub(crate) fn is_tomorrow(now: DateTime<Utc>, start: DateTime<Utc>, tz: Tz) -> bool {
    let today = now.with_timezone(&tz).date_naive();
    let day = start.with_timezone(&tz).date_naive();
    today.succ_opt() == Some(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn tomorrow_is_the_next_local_calendar_day() {
        let tz = chrono_tz::Europe::Berlin;
        // 23 hours ahead, same local day: not "morgen".
        assert!(!is_tomorrow(
            at("2026-03-10T00:30:00Z"),
            at("2026-03-10T22:30:00Z"),
            tz
        ));
        // Across local midnight.
        assert!(is_tomorrow(
            at("2026-03-10T20:00:00Z"),
            at("2026-03-11T19:00:00Z"),
            tz
        ));
        // 23:30Z is already the next day in Berlin.
        assert!(is_tomorrow(
            at("2026-03-09T22:00:00Z"),
            at("2026-03-09T23:30:00Z"),
            tz
        ));
    }
}
