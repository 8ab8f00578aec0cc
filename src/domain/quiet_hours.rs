//! Quiet hours for SMS (`SMS_QUIET_START`..`SMS_QUIET_END`, default 21:00–08:00 in
//! `JOURNEY_TIMEZONE`) and how long a reminder SMS stays worth delivering.
//!
//! Pure rules over instants: no clock, no I/O. The driver asks [`QuietHours::timing`] for
//! every SMS it is about to claim; the ledger keeps a deferred SMS as a `retry` row with
//! `not_before` = the end of quiet hours, and closes it when [`min_lead`] no longer holds.
//!
//! Local times are judged in the journey's time zone, so the window follows the wall clock
//! across a DST change (08:00 is 07:00 UTC in winter and 06:00 UTC in summer). A configured
//! end that falls into the hour a spring DST change skips ends quiet hours at the first
//! instant after the gap.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::{MessageKind, StageFacts};

/// The nightly window in which no SMS goes out: `[start, end)` in local time, wrapping
/// midnight when `start > end`. `start == end` means no quiet hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// What to do with one SMS now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmsTiming {
    /// Outside quiet hours: send.
    Now,
    /// Inside quiet hours; send at `until` (the end of quiet hours), the session being still
    /// far enough away then.
    Defer { until: DateTime<Utc> },
    /// Inside quiet hours, and by their end the session is too close for the reminder to be
    /// of use: not sent (`skipped_quiet_hours`). The email goes anyway.
    TooLate { quiet_until: DateTime<Utc> },
}

impl Default for QuietHours {
    fn default() -> QuietHours {
        QuietHours {
            start: NaiveTime::from_hms_opt(21, 0, 0).expect("valid time"),
            end: NaiveTime::from_hms_opt(8, 0, 0).expect("valid time"),
        }
    }
}

impl QuietHours {
    /// Parses `HH:MM` (as `SMS_QUIET_START`/`SMS_QUIET_END` take it).
    pub fn parse_time(raw: &str) -> Option<NaiveTime> {
        NaiveTime::parse_from_str(raw.trim(), "%H:%M").ok()
    }

    pub fn is_off(&self) -> bool {
        self.start == self.end
    }

    /// Whether `t` lies inside quiet hours (in `tz`'s wall-clock time).
    pub fn contains(&self, t: DateTime<Utc>, tz: Tz) -> bool {
        let local = t.with_timezone(&tz).time();
        if self.start < self.end {
            self.start <= local && local < self.end
        } else if self.start > self.end {
            local >= self.start || local < self.end
        } else {
            false
        }
    }

    /// The end of the quiet hours that contain `t` (or the next end when `t` is outside).
    pub fn end_after(&self, t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let local = t.with_timezone(&tz);
        let today = local.date_naive();
        let candidate = local_instant(tz, today, self.end);
        if candidate > t {
            candidate
        } else {
            let tomorrow = today.succ_opt().unwrap_or(today);
            local_instant(tz, tomorrow, self.end)
        }
    }

    /// The rule for one SMS of a session starting at `session_start`, judged at `now`:
    /// send now, defer to the end of quiet hours while the session is still at least
    /// `min_lead` away then, or skip.
    pub fn timing(
        &self,
        tz: Tz,
        now: DateTime<Utc>,
        session_start: DateTime<Utc>,
        min_lead: Duration,
    ) -> SmsTiming {
        if !self.contains(now, tz) {
            return SmsTiming::Now;
        }
        let until = self.end_after(now, tz);
        if session_start - until >= min_lead {
            SmsTiming::Defer { until }
        } else {
            SmsTiming::TooLate { quiet_until: until }
        }
    }
}

/// The instant of a local date and time: the earlier one when the clock shows it twice (DST
/// ends), the first instant after the gap when it does not exist (DST starts).
fn local_instant(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let naive = date.and_time(time);
    if let Some(t) = tz.from_local_datetime(&naive).earliest() {
        return t.with_timezone(&Utc);
    }
    // Inside a gap: walk forward minute by minute (gaps are at most a few hours).
    let mut probe = naive;
    for _ in 0..(24 * 60) {
        probe += Duration::minutes(1);
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            let t = t.with_timezone(&Utc);
            // The first minute after the gap, to the minute.
            return t - Duration::seconds(i64::from(chrono::Timelike::second(&t)));
        }
    }
    Utc.from_utc_datetime(&naive)
}

/// How far ahead the session must still be when quiet hours end for a deferred reminder SMS
/// to go out: 2 hours for the 24-hour reminder (issue 14), 15 minutes for the 1-hour one
/// (still useful as a "starts soon", with room for its validity period). `None` for
/// messages without an SMS.
pub fn min_lead(kind: MessageKind) -> Option<Duration> {
    match kind {
        MessageKind::Reminder24h => Some(Duration::hours(2)),
        MessageKind::Reminder1h => Some(Duration::minutes(15)),
        _ => None,
    }
}

/// [`min_lead`] of the messages a stage sends (its facts' kinds): the first that has one.
pub fn min_lead_of(facts: &StageFacts) -> Option<Duration> {
    facts.kinds.iter().find_map(|k| min_lead(*k))
}

/// Twilio's longest `ValidityPeriod` (10 hours).
pub const MAX_VALIDITY_SECS: i64 = 36_000;

/// A reminder must never arrive after the session began: its SMS expires 5 minutes before the
/// start.
pub const VALIDITY_MARGIN: Duration = Duration::minutes(5);

/// `ValidityPeriod` (seconds) of a reminder SMS sent at `now`: min(36000, seconds until the
/// session starts − 300), at least 1. `None` for other messages (Twilio's default applies).
pub fn sms_validity_secs(
    kind: MessageKind,
    now: DateTime<Utc>,
    session_start: DateTime<Utc>,
) -> Option<u32> {
    min_lead(kind)?;
    let secs = (session_start - VALIDITY_MARGIN - now).num_seconds();
    Some(secs.clamp(1, MAX_VALIDITY_SECS) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Berlin;

    fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Berlin
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const Q: QuietHours = QuietHours {
        start: NaiveTime::from_hms_opt(21, 0, 0).unwrap(),
        end: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
    };

    #[test]
    fn the_default_window_is_nine_pm_to_eight_am_and_wraps_midnight() {
        assert_eq!(QuietHours::default(), Q);
        assert!(!Q.contains(berlin(2026, 3, 10, 20, 59), Berlin));
        assert!(Q.contains(berlin(2026, 3, 10, 21, 0), Berlin));
        assert!(Q.contains(berlin(2026, 3, 11, 3, 0), Berlin));
        assert!(Q.contains(berlin(2026, 3, 11, 7, 59), Berlin));
        assert!(!Q.contains(berlin(2026, 3, 11, 8, 0), Berlin));
    }

    #[test]
    fn a_window_inside_one_day_and_an_empty_one() {
        let siesta = QuietHours {
            start: QuietHours::parse_time("13:00").unwrap(),
            end: QuietHours::parse_time("15:00").unwrap(),
        };
        assert!(siesta.contains(berlin(2026, 3, 10, 14, 0), Berlin));
        assert!(!siesta.contains(berlin(2026, 3, 10, 15, 0), Berlin));
        assert!(!siesta.contains(berlin(2026, 3, 10, 3, 0), Berlin));
        let off = QuietHours {
            start: Q.end,
            end: Q.end,
        };
        assert!(off.is_off());
        assert!(!off.contains(berlin(2026, 3, 10, 3, 0), Berlin));
        assert_eq!(
            off.timing(
                Berlin,
                berlin(2026, 3, 10, 3, 0),
                berlin(2026, 3, 10, 4, 0),
                Duration::zero()
            ),
            SmsTiming::Now
        );
    }

    #[test]
    fn the_end_of_quiet_hours_is_the_same_morning_or_the_next() {
        assert_eq!(
            Q.end_after(berlin(2026, 3, 10, 22, 0), Berlin),
            berlin(2026, 3, 11, 8, 0)
        );
        assert_eq!(
            Q.end_after(berlin(2026, 3, 11, 5, 0), Berlin),
            berlin(2026, 3, 11, 8, 0)
        );
    }

    #[test]
    fn quiet_hours_follow_the_wall_clock_across_both_dst_changes() {
        // Night of 28/29 March 2026: clocks go from 02:00 CET to 03:00 CEST.
        assert_eq!(
            Q.end_after(berlin(2026, 3, 28, 23, 0), Berlin),
            utc("2026-03-29T06:00:00Z")
        );
        assert!(Q.contains(utc("2026-03-29T05:59:00Z"), Berlin));
        assert!(!Q.contains(utc("2026-03-29T06:00:00Z"), Berlin));
        // The evening before, 21:00 CET is 20:00 UTC; the evening after, 21:00 CEST is 19:00.
        assert!(Q.contains(utc("2026-03-28T20:00:00Z"), Berlin));
        assert!(!Q.contains(utc("2026-03-29T18:59:00Z"), Berlin));
        assert!(Q.contains(utc("2026-03-29T19:00:00Z"), Berlin));
        // Night of 24/25 October 2026: 03:00 CEST becomes 02:00 CET again.
        assert_eq!(
            Q.end_after(berlin(2026, 10, 24, 22, 0), Berlin),
            utc("2026-10-25T07:00:00Z")
        );
        assert!(Q.contains(utc("2026-10-25T06:59:00Z"), Berlin));
        assert!(!Q.contains(utc("2026-10-25T07:00:00Z"), Berlin));
    }

    #[test]
    fn an_end_inside_the_skipped_hour_ends_quiet_hours_right_after_the_gap() {
        let q = QuietHours {
            start: QuietHours::parse_time("23:00").unwrap(),
            end: QuietHours::parse_time("02:30").unwrap(),
        };
        // 02:30 does not exist on 29 March 2026 in Berlin; 03:00 CEST (01:00 UTC) is next.
        assert_eq!(
            q.end_after(utc("2026-03-28T23:00:00Z"), Berlin),
            utc("2026-03-29T01:00:00Z")
        );
        // 02:30 exists twice on 25 October: the first one (CEST, 00:30 UTC) ends them.
        assert_eq!(
            q.end_after(utc("2026-10-24T22:00:00Z"), Berlin),
            utc("2026-10-25T00:30:00Z")
        );
    }

    #[test]
    fn a_24h_reminder_at_night_waits_for_the_morning_while_the_session_is_2h_away() {
        let lead = min_lead(MessageKind::Reminder24h).unwrap();
        let now = berlin(2026, 3, 10, 6, 30);
        assert_eq!(
            Q.timing(Berlin, now, berlin(2026, 3, 11, 6, 30), lead),
            SmsTiming::Defer {
                until: berlin(2026, 3, 10, 8, 0)
            }
        );
        // Session at 09:30: at 08:00 it is 1 h 30 min away, too close.
        assert_eq!(
            Q.timing(Berlin, now, berlin(2026, 3, 10, 9, 30), lead),
            SmsTiming::TooLate {
                quiet_until: berlin(2026, 3, 10, 8, 0)
            }
        );
        // Exactly 2 h away at the end of quiet hours still goes.
        assert!(matches!(
            Q.timing(Berlin, now, berlin(2026, 3, 10, 10, 0), lead),
            SmsTiming::Defer { .. }
        ));
        assert_eq!(
            Q.timing(
                Berlin,
                berlin(2026, 3, 10, 8, 0),
                berlin(2026, 3, 10, 9, 0),
                lead
            ),
            SmsTiming::Now
        );
    }

    #[test]
    fn a_1h_reminder_for_a_session_at_half_past_eight_goes_at_eight() {
        let lead = min_lead(MessageKind::Reminder1h).unwrap();
        let session = berlin(2026, 3, 29, 8, 30);
        assert_eq!(
            Q.timing(Berlin, berlin(2026, 3, 29, 7, 20), session, lead),
            SmsTiming::Defer {
                until: berlin(2026, 3, 29, 8, 0)
            }
        );
        assert_eq!(
            Q.timing(
                Berlin,
                berlin(2026, 3, 29, 7, 0),
                berlin(2026, 3, 29, 8, 10),
                lead
            ),
            SmsTiming::TooLate {
                quiet_until: berlin(2026, 3, 29, 8, 0)
            }
        );
    }

    #[test]
    fn a_reminder_sms_expires_five_minutes_before_the_session_and_at_most_after_ten_hours() {
        let now = utc("2026-03-10T08:00:00Z");
        assert_eq!(
            sms_validity_secs(MessageKind::Reminder1h, now, now + Duration::hours(1)),
            Some(3300)
        );
        assert_eq!(
            sms_validity_secs(MessageKind::Reminder24h, now, now + Duration::hours(24)),
            Some(36_000)
        );
        assert_eq!(
            sms_validity_secs(MessageKind::Reminder1h, now, now + Duration::minutes(2)),
            Some(1)
        );
        assert_eq!(
            sms_validity_secs(MessageKind::ClientConfirmation, now, now),
            None
        );
    }
}
