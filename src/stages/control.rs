//! A run's lifetime: why it stops claiming early (its deadline, SIGTERM, SIGINT), how long it
//! then waits for sends already in flight, and which channels it stopped using because the
//! provider refused our own settings. Shared by every stage of one run; knows nothing of SQL.
//!
//! Stopping never abandons a message that was handed to a provider while its answer can still
//! come within the drain bound: the driver stops *claiming*, lets in-flight sends finish, and
//! records their outcomes. Messages not yet claimed get no row and are left for the next run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::domain::Channel;

/// How long in-flight sends may take once a run is told to stop (deadline, SIGTERM, SIGINT):
/// well inside systemd's stop timeout, and with the default deadline inside the 5-minute
/// unit's `TimeoutStartSec`. The stage commands' `commands::stage::DRAIN`.
pub(crate) const DEFAULT_DRAIN: Duration = Duration::from_secs(20);

/// Why a run stopped claiming before its work was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The run's deadline passed (`--run-deadline`).
    Deadline,
    /// SIGTERM (systemd stopping the unit, `kill`).
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
}

impl StopReason {
    /// The `journey_runs.outcome` of a run that stopped for this reason.
    pub fn outcome(self) -> &'static str {
        match self {
            StopReason::Deadline => "deadline",
            StopReason::Terminate => "terminated",
            StopReason::Interrupt => "interrupted",
        }
    }
}

/// Shared by all stages of one run (cheap to clone).
#[derive(Clone)]
pub struct RunControl {
    stop: Arc<watch::Sender<Option<StopReason>>>,
    /// How long in-flight sends may take once a stop is requested.
    drain: Duration,
    /// The run's deadline, when it has one (stage commands do; the webhook path does not).
    deadline: Option<Duration>,
    /// Channels stopped for the rest of the run, with the setting the provider refused.
    misconfigured: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl Default for RunControl {
    /// No deadline, a 20 s drain bound, nothing stopped.
    fn default() -> RunControl {
        RunControl::new(DEFAULT_DRAIN)
    }
}

impl RunControl {
    pub fn new(drain: Duration) -> RunControl {
        RunControl {
            stop: Arc::new(watch::Sender::new(None)),
            drain,
            deadline: None,
            misconfigured: Arc::default(),
        }
    }

    pub fn with_deadline(mut self, deadline: Duration) -> RunControl {
        self.deadline = Some(deadline);
        self
    }

    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    pub fn drain(&self) -> Duration {
        self.drain
    }

    /// Asks the run to stop claiming. The first reason wins, except that a signal after the
    /// deadline still sets the exit status a supervisor expects.
    pub fn request_stop(&self, why: StopReason) {
        let first = self.stop.send_if_modified(|r| {
            let replaces = match *r {
                None => true,
                Some(StopReason::Deadline) => why != StopReason::Deadline,
                Some(_) => false,
            };
            if replaces {
                *r = Some(why);
                true
            } else {
                false
            }
        });
        if first {
            log::warn!(
                "{}: no more claims; in-flight sends get up to {} s to finish",
                match why {
                    StopReason::Deadline => "run deadline reached",
                    StopReason::Terminate => "SIGTERM received",
                    StopReason::Interrupt => "SIGINT received",
                },
                self.drain.as_secs()
            );
        }
    }

    pub fn stopped(&self) -> Option<StopReason> {
        *self.stop.borrow()
    }

    /// Resolves once a stop was requested and the drain bound has passed since.
    pub async fn drain_expired(&self) {
        let mut rx = self.stop.subscribe();
        if rx.wait_for(Option::is_some).await.is_err() {
            // The sender lives as long as `self`: never reached.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.drain).await;
    }

    /// Stops a channel for the rest of the run: the provider refused `setting`.
    pub fn stop_channel(&self, channel: Channel, setting: &str) {
        let mut m = self
            .misconfigured
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if m.insert(channel.as_str(), setting.to_string()).is_none() {
            log::error!(
                "{channel}: stopped because of our {setting} (see the error above); no more {channel} is sent in \
                 this run (the rest stays due for the next run once {setting} is fixed)"
            );
        }
    }

    pub fn channel_stopped(&self, channel: Channel) -> bool {
        self.misconfigured
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains_key(channel.as_str())
    }

    /// `(channel, setting)` of every channel stopped in this run.
    pub fn misconfigured(&self) -> Vec<(&'static str, String)> {
        self.misconfigured
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(c, s)| (*c, s.clone()))
            .collect()
    }
}

/// Requests a stop on SIGTERM and SIGINT, for as long as the returned task runs. A second
/// signal (an impatient operator pressing Ctrl-C again) exits at once, with 143/130: rows
/// still `sending` then become `in_doubt` on the next run, as after a kill.
pub(crate) fn listen_for_signals(
    control: RunControl,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        loop {
            let (why, code) = tokio::select! {
                _ = term.recv() => (StopReason::Terminate, 143),
                _ = int.recv() => (StopReason::Interrupt, 130),
            };
            if control.stopped().is_some_and(|r| r != StopReason::Deadline) {
                log::error!("second signal: exiting without waiting for sends in flight");
                std::process::exit(code);
            }
            control.request_stop(why);
        }
    }))
}

/// Requests a stop with [`StopReason::Deadline`] after `after`.
pub(crate) fn arm_deadline(control: RunControl, after: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        control.request_stop(StopReason::Deadline);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_wins_but_a_signal_overrides_the_deadline() {
        let c = RunControl::default();
        assert_eq!(c.stopped(), None);
        c.request_stop(StopReason::Deadline);
        c.request_stop(StopReason::Deadline);
        assert_eq!(c.stopped(), Some(StopReason::Deadline));
        c.request_stop(StopReason::Terminate);
        assert_eq!(c.stopped(), Some(StopReason::Terminate));
        c.request_stop(StopReason::Interrupt);
        assert_eq!(c.stopped(), Some(StopReason::Terminate));
    }

    #[test]
    fn a_stopped_channel_stays_stopped_and_names_its_setting() {
        let c = RunControl::default();
        let shared = c.clone();
        shared.stop_channel(Channel::Sms, "TWILIO_AUTH_TOKEN");
        assert!(c.channel_stopped(Channel::Sms));
        assert!(!c.channel_stopped(Channel::Email));
        assert_eq!(
            c.misconfigured(),
            vec![("sms", "TWILIO_AUTH_TOKEN".to_string())]
        );
    }
}
