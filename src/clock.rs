//! The one source of "now" for a run: the instant is fixed once at start-up (or given with
//! `--now`), and every rule of the run is judged against it. Nothing else reads the wall clock
//! for eligibility.

use chrono::{DateTime, Utc};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    now: DateTime<Utc>,
}

impl Clock {
    /// The real current time, read once.
    pub fn system() -> Clock {
        Clock { now: Utc::now() }
    }

    /// A pretended instant (`--now`, replays, tests, the demo's simulated week).
    pub fn fixed(now: DateTime<Utc>) -> Clock {
        Clock { now }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }
}
