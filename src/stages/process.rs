//! One page of due bookings through the stage: load their patients, ledger rows and
//! opt-outs (one query each), take the pure decision (`stages::decide`) per booking, apply
//! the gates (opt-outs, quiet hours, one recovery per patient) and record the skips, then
//! deliver what is left (`stages::batch`) and add it all to the report.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::decide::{self, Decision, Existing, Messages};
use super::deliver::Delivery;
use super::gate::{self, Gate};
use super::journey::{Journey, Pass};
use super::optout;
use super::plan::{Message, PlanInput};
use super::report::{count_error, ErrorAt, StageReport};
use crate::db::bookings::{self, DueBooking, PatientRow};
use crate::db::ledger::{self, DeliveryKey};
use crate::domain::{mark_column, Channel, Counter, RecipientRole, Stage};

/// A page's lookups; a failed one is kept as its reason, an error for every booking.
pub(crate) struct Loaded {
    patients: Result<HashMap<Uuid, PatientRow>, String>,
    existing: Result<Existing, String>,
    optouts: optout::Batch,
}

/// What the page's bookings hand on to delivery.
#[derive(Default)]
struct Page {
    deliveries: Vec<Delivery>,
    /// Patients who get a cancellation recovery in this run already (one per patient).
    recovered: HashSet<Uuid>,
}

/// Decides, gates and delivers one page of due bookings (see the module doc).
pub(crate) async fn process(
    j: &Journey,
    pass: Pass,
    due: Vec<DueBooking>,
    report: &mut StageReport,
) {
    let loaded = load(j, pass.stage, &due).await;
    process_loaded(j, pass, due, loaded, report).await;
}

/// [`process`] of a page whose lookups are done already ([`load`]): the stage's page loop
/// looks the next page up while this one is sent.
pub(crate) async fn process_loaded(
    j: &Journey,
    pass: Pass,
    due: Vec<DueBooking>,
    loaded: Loaded,
    report: &mut StageReport,
) {
    report.counters.add(Counter::Processed, due.len() as u64);
    if due.is_empty() {
        return;
    }
    let mut page = Page::default();
    for b in &due {
        let mut ctx = Ctx {
            j,
            pass,
            b,
            loaded: &loaded,
            report,
        };
        ctx.booking(&mut page).await;
    }
    let tallies = super::batch::deliver_all(j, pass, page.deliveries, report).await;
    let mut taken: HashSet<Uuid> = HashSet::new();
    for t in tallies {
        report.absorb(&t.counters, t.failures);
        report.planned.extend(t.planned);
        taken.extend(t.taken);
    }
    // Bookings, not messages: one booking whose two messages another run had counts once.
    report
        .counters
        .add(Counter::SkippedAlreadySent, taken.len() as u64);
    report.sort_planned();
}

/// The page's lookups: its patients, its ledger rows and the opt-outs of its addresses (none
/// for an empty page).
pub(crate) async fn load(j: &Journey, stage: Stage, due: &[DueBooking]) -> Loaded {
    let patient_ids: Vec<Uuid> = due.iter().filter_map(|b| b.patient_id).collect();
    let patients = bookings::load_patients(&j.db, &patient_ids)
        .await
        .map_err(|e| format!("{e:#}"));
    let booking_ids: Vec<Uuid> = due.iter().map(|b| b.id).collect();
    let existing = ledger::load(&j.db, &booking_ids, stage.ledger_stage())
        .await
        .map_err(|e| format!("{e:#}"));
    let optouts = optout::Batch::load(j, due, &patients).await;
    Loaded {
        patients,
        existing,
        optouts,
    }
}

/// One booking being worked, with what its messages need.
struct Ctx<'a, 'r> {
    j: &'a Journey,
    pass: Pass,
    b: &'a DueBooking,
    loaded: &'a Loaded,
    report: &'r mut StageReport,
}

impl Ctx<'_, '_> {
    /// Decides one booking and acts on the decision: a booking skip is counted (and
    /// recorded), its messages go on to [`Ctx::messages`].
    async fn booking(&mut self, page: &mut Page) {
        let (j, stage, b, dry_run) = (self.j, self.pass.stage, self.b, self.pass.dry_run);
        let (patients, existing) = match (&self.loaded.patients, &self.loaded.existing) {
            (Ok(p), Ok(e)) => (p, e),
            (Err(why), _) | (_, Err(why)) => {
                // A failed lookup is an error for every booking it concerns, never "no patient".
                let why = format!("lookup failed: {why}");
                let at = ErrorAt::booking(stage, b.id, None);
                count_error(j, self.report, dry_run, at, &why).await;
                return;
            }
        };
        let attendee = PatientRow::attendee_of(b);
        let input = PlanInput {
            booking: b,
            patient: b.patient_id.and_then(|id| patients.get(&id)),
            attendee: attendee.as_ref(),
            settings: &j.settings,
            now: j.clock.now(),
            sms_enabled: j.senders.enabled(Channel::Sms),
        };
        match decide::decide(stage, self.pass.origin, &input, existing) {
            Decision::SkipBooking {
                counter,
                reason,
                record,
                mark_column,
            } => {
                self.report.counters.bump(counter);
                log::debug!("{stage}: booking {} skipped: {reason}", b.id);
                if record && !dry_run {
                    // Recorded: counted in this run only, and not selected again.
                    skip_booking(j, stage, b, reason, mark_column, self.report).await;
                }
            }
            Decision::Messages(m) => self.messages(m, page).await,
        }
    }

    /// Records the rules' skips, counts what an earlier run left in doubt, and gates each
    /// message to send; those that pass go to `page`.
    async fn messages(&mut self, m: Messages, page: &mut Page) {
        let (j, stage, b, dry_run) = (self.j, self.pass.stage, self.b, self.pass.dry_run);
        if m.all_done_before() {
            self.report.counters.bump(Counter::SkippedAlreadySent);
            return;
        }
        for s in &m.skipped {
            self.report.counters.bump(s.counter);
            let (role, channel) = (s.key.role, s.key.channel);
            log::debug!(
                "{stage}: booking {} {role} {channel} skipped: {}",
                b.id,
                s.reason
            );
            if !dry_run {
                self.record_skip(&s.key, s.reason).await;
            }
        }
        self.report.counters.add(Counter::InDoubt, m.in_doubt);
        for mut message in m.to_send {
            if self.held(&mut message, page).await {
                continue;
            }
            let role = message.role;
            let key = decide::delivery_key(stage, b, message.to.channel(), role);
            let mark = mark_column(stage, role);
            page.deliveries
                .push(Delivery::new(j, b, key, message, mark));
        }
    }

    /// The gates before a claim, in order: opt-outs, quiet hours, one cancellation recovery
    /// per patient and run. `true`: held here (counted, recorded), not to be claimed.
    async fn held(&mut self, message: &mut Message, page: &mut Page) -> bool {
        let (j, stage, b, dry_run) = (self.j, self.pass.stage, self.b, self.pass.dry_run);
        let optouts = &self.loaded.optouts;
        if optout::gate(j, optouts, stage, b, message, dry_run, self.report).await {
            return true;
        }
        match gate::quiet_hours(j, stage, b, message, j.clock.now(), dry_run).await {
            Gate::Send => {}
            Gate::Held(counter) => {
                self.report.counters.bump(counter);
                return true;
            }
            Gate::Failed(why) => {
                let at = ErrorAt::booking(stage, b.id, Some(message.to.channel()));
                count_error(j, self.report, dry_run, at, &why).await;
                return true;
            }
        }
        let second_recovery = stage == Stage::CancellationRecovery
            && b.patient_id.is_some_and(|pid| !page.recovered.insert(pid));
        if second_recovery {
            self.report.counters.bump(Counter::SkippedRecentlyRecovered);
            if !dry_run {
                let reason = "patient gets a recovery email for another booking in this run";
                let col = mark_column(stage, message.role);
                skip_booking(j, stage, b, reason, col, self.report).await;
            }
        }
        second_recovery
    }

    async fn record_skip(&mut self, key: &DeliveryKey, reason: &str) {
        let (j, b) = (self.j, self.b);
        let now = j.clock.now();
        let recorded =
            ledger::record_skip(&j.db, key, b.patient_id, j.run_id, reason, None, now).await;
        if let Err(e) = recorded {
            let at = ErrorAt::booking(self.pass.stage, b.id, None);
            count_error(j, self.report, self.pass.dry_run, at, &format!("{e:#}")).await;
        }
    }
}

/// Writes a booking-level skip to the ledger: the stage's (email, patient) key, and for the
/// confirmation also the therapist's, so neither recipient is selected again. A failure is
/// counted and recorded as an error.
async fn skip_booking(
    j: &Journey,
    stage: Stage,
    b: &DueBooking,
    reason: &str,
    mark: Option<&'static str>,
    report: &mut StageReport,
) {
    let now = j.clock.now();
    if let Err(e) = record_booking_skip(j, stage, b, reason, mark, now).await {
        let at = ErrorAt::booking(stage, b.id, None);
        count_error(j, report, false, at, &format!("{e:#}")).await;
    }
}

async fn record_booking_skip(
    j: &Journey,
    stage: Stage,
    b: &DueBooking,
    reason: &str,
    mark: Option<&'static str>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let roles: &[RecipientRole] = match stage {
        Stage::ConfirmationRecovery => &[RecipientRole::Patient, RecipientRole::Therapist],
        _ => &[RecipientRole::Patient],
    };
    for &role in roles {
        let key = decide::delivery_key(stage, b, Channel::Email, role);
        let col = (role == RecipientRole::Patient).then_some(mark).flatten();
        ledger::record_skip(&j.db, &key, b.patient_id, j.run_id, reason, col, now).await?;
    }
    Ok(())
}
