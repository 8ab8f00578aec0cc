//! The stages of the journey. Each stage file says who is due and what to send (pure rules
//! over selected rows); `driver` claims, renders, sends and records, the same way for all.

mod batch;
mod batch_claim;
pub mod cancellation_notice;
pub mod confirmation;
pub mod control;
mod decide;
mod deliver;
pub mod driver;
#[cfg(test)]
mod fixtures;
pub mod followups;
pub mod gate;
mod journey;
pub mod optout;
mod outcome;
pub mod plan;
mod process;
pub mod reminders;
mod render;
mod report;
mod row;
mod select;
mod stamper;

use chrono::Duration;

use crate::config::{parse_offset, ConfigError};
use crate::domain::Stage;

pub use control::{RunControl, StopReason};
pub use driver::{run_stage, Journey, PlannedMessage, StageOptions, StageReport};

/// Whether a stage's window lies behind `now` (followups, recoveries) or ahead (reminders).
pub fn looks_back(stage: Stage) -> bool {
    !matches!(stage, Stage::Reminder24h | Stage::Reminder1h)
}

/// The window as offsets from now, `(earlier, later)`. Flags override the defaults; for
/// stages that look back, unsigned durations mean "ago" (`--window-start 10m --window-end 30m`
/// on intro-followup is "ended 10 to 30 minutes ago"). The order of the two does not matter.
pub fn resolve_window(
    stage: Stage,
    start: Option<&str>,
    end: Option<&str>,
) -> Result<(Duration, Duration), ConfigError> {
    let (d_start, d_end) = stage.default_window();
    let parse =
        |flag: &str, raw: Option<&str>, default: Duration| -> Result<Duration, ConfigError> {
            match raw {
                None => Ok(default),
                Some(r) => {
                    let d = parse_offset(flag, r)?;
                    Ok(if looks_back(stage) && d > Duration::zero() {
                        -d
                    } else {
                        d
                    })
                }
            }
        };
    let a = parse("--window-start", start, d_start)?;
    let b = parse("--window-end", end, d_end)?;
    Ok(if a <= b { (a, b) } else { (b, a) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        assert_eq!(
            resolve_window(Stage::Reminder1h, None, None).unwrap(),
            (Duration::minutes(50), Duration::minutes(70))
        );
        assert_eq!(
            resolve_window(Stage::IntroFollowup, None, None).unwrap(),
            (Duration::minutes(-30), Duration::minutes(-10))
        );
    }

    #[test]
    fn look_back_windows_take_unsigned_durations_as_ago() {
        assert_eq!(
            resolve_window(Stage::SessionFollowup, Some("3d"), Some("6d")).unwrap(),
            (Duration::days(-6), Duration::days(-3))
        );
        assert_eq!(
            resolve_window(Stage::Reminder24h, Some("26h"), Some("22h")).unwrap(),
            (Duration::hours(22), Duration::hours(26))
        );
    }
}
