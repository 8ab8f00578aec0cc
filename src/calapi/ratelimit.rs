//! Pacing requests to Cal.com: 120 requests per 60 s per API key (Cal.com's documented
//! default), and what a response says about when to send the next one.
//!
//! [`RateLimiter`] keeps the send times of the last window and says how long to wait before
//! the next request, so a run never sends more than the limit in any 60-second span, whatever
//! Cal.com's own counting is. [`wait_from_headers`] reads `Retry-After` (seconds or an HTTP
//! date) and `X-RateLimit-Reset[-Name]` (seconds from now, or a Unix time: Cal.com's
//! documentation and its code disagree, so both are read), and `X-RateLimit-Remaining[-Name]`
//! of 0 as "wait for the reset".
//!
//! Pure: time is passed in, nothing sleeps here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Cal.com's default limit for API keys.
pub(crate) const LIMIT: usize = 120;
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// How long to wait after a 429 that names no reset.
pub(crate) const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);

/// The longest wait any header can ask for: a reset further away is read as a wrong header,
/// and the caller's deadline bounds it anyway.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

pub(crate) struct RateLimiter {
    limit: usize,
    window: Duration,
    sent: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

impl Default for RateLimiter {
    fn default() -> RateLimiter {
        RateLimiter::new(LIMIT, WINDOW)
    }
}

impl RateLimiter {
    pub(crate) fn new(limit: usize, window: Duration) -> RateLimiter {
        RateLimiter {
            limit: limit.max(1),
            window,
            sent: VecDeque::new(),
            blocked_until: None,
        }
    }

    /// How long to wait at `now` before the next request may go out.
    pub(crate) fn delay(&mut self, now: Instant) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.sent.pop_front();
        }
        let mut wait = Duration::ZERO;
        if self.sent.len() >= self.limit {
            if let Some(oldest) = self.sent.front() {
                wait = (*oldest + self.window).saturating_duration_since(now);
            }
        }
        if let Some(until) = self.blocked_until {
            wait = wait.max(until.saturating_duration_since(now));
        }
        wait
    }

    /// A request went out at `at`.
    pub(crate) fn record(&mut self, at: Instant) {
        self.sent.push_back(at);
    }

    /// Nothing may go out before `until` (a 429, or no requests remaining).
    pub(crate) fn block_until(&mut self, until: Instant) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
    }

    /// Requests sent in the window ending at `now`.
    #[cfg(test)]
    pub(crate) fn in_window(&mut self, now: Instant) -> usize {
        let _ = self.delay(now);
        self.sent.len()
    }
}

/// When the headers of a response ask us to wait, how long (from `now_unix`, the wall clock in
/// seconds since the epoch). `rate_limited` is true for a 429: then the answer is always some
/// wait, [`DEFAULT_BACKOFF`] when no header names one. For other answers, a wait is asked only
/// by a `X-RateLimit-Remaining*` of 0 together with a reset.
pub(crate) fn wait_from_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    now_unix: i64,
    rate_limited: bool,
) -> Option<Duration> {
    let mut retry_after: Option<Duration> = None;
    let mut reset: Option<Duration> = None;
    let mut exhausted = false;
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let value = value.trim();
        if name == "retry-after" {
            retry_after = max(retry_after, parse_retry_after(value, now_unix));
        } else if name.starts_with("x-ratelimit-reset") {
            reset = max(reset, parse_reset(value, now_unix));
        } else if name.starts_with("x-ratelimit-remaining") && value.parse::<i64>() == Ok(0) {
            exhausted = true;
        }
    }
    let named = max(retry_after, reset).map(|d| d.min(MAX_WAIT));
    if rate_limited {
        Some(named.unwrap_or(DEFAULT_BACKOFF))
    } else if exhausted {
        Some(reset.map_or(DEFAULT_BACKOFF, |d| d.min(MAX_WAIT)))
    } else {
        None
    }
}

fn max(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    seconds((at.timestamp() - now_unix) as f64)
}

/// `X-RateLimit-Reset*`: seconds until the reset, or the reset as a Unix time in seconds or
/// milliseconds.
fn parse_reset(value: &str, now_unix: i64) -> Option<Duration> {
    let n = value.parse::<f64>().ok()?;
    if n > 1e12 {
        seconds(n / 1000.0 - now_unix as f64)
    } else if n > 1e9 {
        seconds(n - now_unix as f64)
    } else {
        seconds(n)
    }
}

fn seconds(s: f64) -> Option<Duration> {
    if !s.is_finite() {
        return None;
    }
    Some(Duration::from_secs_f64(
        s.clamp(0.0, MAX_WAIT.as_secs_f64()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_772_000_000;

    #[test]
    fn the_121st_request_in_a_minute_waits_until_the_first_leaves_the_window() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..LIMIT {
            let at = t0 + Duration::from_millis(100 * i as u64);
            assert_eq!(l.delay(at), Duration::ZERO, "request {i}");
            l.record(at);
        }
        let at = t0 + Duration::from_secs(12);
        assert_eq!(l.delay(at), Duration::from_secs(48));
        assert_eq!(l.in_window(at), LIMIT);
        // Once the first has aged out, one more may go.
        assert_eq!(l.delay(t0 + WINDOW), Duration::ZERO);
        assert_eq!(l.in_window(t0 + WINDOW), LIMIT - 1);
    }

    #[test]
    fn no_more_than_the_limit_in_any_window_when_the_caller_waits_as_told() {
        let mut l = RateLimiter::new(5, Duration::from_secs(10));
        let mut now = Instant::now();
        let start = now;
        let mut sent = Vec::new();
        for _ in 0..23 {
            now += l.delay(now);
            l.record(now);
            sent.push(now);
        }
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .filter(|u| u.duration_since(*t) < Duration::from_secs(10))
                .count();
            assert!(in_window <= 5, "{in_window} requests within 10 s");
        }
        assert!(now.duration_since(start) >= Duration::from_secs(40));
    }

    #[test]
    fn a_block_delays_even_an_empty_window() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        l.block_until(t0 + Duration::from_secs(3));
        assert_eq!(l.delay(t0), Duration::from_secs(3));
        assert_eq!(l.delay(t0 + Duration::from_secs(4)), Duration::ZERO);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(
            wait_from_headers([("Retry-After", "1")], NOW, true),
            Some(Duration::from_secs(1))
        );
        let date = chrono::DateTime::from_timestamp(NOW + 7, 0)
            .unwrap()
            .to_rfc2822();
        assert_eq!(
            wait_from_headers([("retry-after", date.as_str())], NOW, true),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn ratelimit_reset_as_seconds_or_unix_time_of_any_name() {
        assert_eq!(
            wait_from_headers([("X-RateLimit-Reset-Default", "2")], NOW, true),
            Some(Duration::from_secs(2))
        );
        let unix = (NOW + 30).to_string();
        assert_eq!(
            wait_from_headers([("x-ratelimit-reset-default", unix.as_str())], NOW, true),
            Some(Duration::from_secs(30))
        );
        let millis = ((NOW + 5) * 1000).to_string();
        assert_eq!(
            wait_from_headers([("X-RateLimit-Reset", millis.as_str())], NOW, true),
            Some(Duration::from_secs(5))
        );
        // The longer of two names wins.
        assert_eq!(
            wait_from_headers(
                [("Retry-After", "1"), ("X-RateLimit-Reset-Default", "4")],
                NOW,
                true
            ),
            Some(Duration::from_secs(4))
        );
    }

    #[test]
    fn a_429_without_headers_backs_off_a_whole_window_and_absurd_resets_are_capped() {
        assert_eq!(wait_from_headers([], NOW, true), Some(DEFAULT_BACKOFF));
        assert_eq!(
            wait_from_headers([("Retry-After", "999999")], NOW, true),
            Some(MAX_WAIT)
        );
        assert_eq!(
            wait_from_headers([("Retry-After", "soon")], NOW, true),
            Some(DEFAULT_BACKOFF)
        );
    }

    #[test]
    fn a_success_asks_for_a_wait_only_when_nothing_remains() {
        assert_eq!(
            wait_from_headers(
                [
                    ("X-RateLimit-Remaining-Default", "3"),
                    ("X-RateLimit-Reset-Default", "20")
                ],
                NOW,
                false
            ),
            None
        );
        assert_eq!(
            wait_from_headers(
                [
                    ("X-RateLimit-Remaining-Default", "0"),
                    ("X-RateLimit-Reset-Default", "20")
                ],
                NOW,
                false
            ),
            Some(Duration::from_secs(20))
        );
    }
}
