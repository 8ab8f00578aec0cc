//! The run context every stage works with ([`Journey`]), the options of one stage run
//! ([`StageOptions`]) and how one batch of bookings is worked ([`Pass`]). Built once per
//! process by `commands::stage::journey`; nothing here talks to a database or a provider.

use std::sync::Arc;

use chrono::Duration;
use uuid::Uuid;

use super::confirmation_recovery::Origin;
use super::control::RunControl;
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::Db;
use crate::domain::Stage;
use crate::notify::Senders;
use crate::templates::Templates;

/// What one run works with. Built once per process; stages share it.
#[derive(Clone)]
pub struct Journey {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub templates: Arc<Templates>,
    /// One sender per channel (`notify::Senders`); a channel without one is off.
    pub senders: Senders,
    pub clock: Clock,
    pub run_id: Uuid,
    /// This process's connection name, recorded on claims (liveness of `sending` rows).
    pub application_name: String,
    /// Right-hand side of generated Message-IDs (the sender's domain).
    pub message_id_domain: String,
    /// The run's deadline, signals and stopped channels.
    pub control: RunControl,
}

#[derive(Clone, Debug)]
pub struct StageOptions {
    pub dry_run: bool,
    pub limit: Option<u32>,
    /// Offsets from now, `(earlier, later)`.
    pub window: (Duration, Duration),
    pub lock: bool,
    pub concurrency: usize,
}

/// How one batch of due bookings is worked: by which stage, on whose behalf (a run's
/// selection or the webhook), for real or as a dry run, with how many sends at once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pass {
    pub stage: Stage,
    pub origin: Origin,
    pub dry_run: bool,
    pub concurrency: usize,
}

/// Sends at once on the webhook's path (one booking: its confirmation and therapist notice).
pub(crate) const WEBHOOK_CONCURRENCY: usize = 2;
