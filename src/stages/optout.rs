//! Opt-outs: who must not get anything more, and the opt-out every advertising email carries.
//!
//! - Before a message is claimed, [`gate`] looks its recipient up in `suppressions` (loaded
//!   once per batch of due bookings by [`Batch::load`]; the webhook's cancellation notice asks
//!   [`suppressed_one`]): a suppressed recipient is recorded in the ledger as `skipped` and
//!   counted `skipped_opted_out` once, and never attempted again on that channel.
//! - After Twilio refused a number for good ([`after_send`]: 21610 STOP, 21211 invalid,
//!   21614 not a mobile), the number is suppressed (source `twilio`).
//! - The intro followup, the session followup and the cancellation recovery invite the patient
//!   to book again: advertising (UWG §7(3)), so they carry an unsubscribe link (the visible line
//!   in the templates, and `List-Unsubscribe` + `List-Unsubscribe-Post`, RFC 8058, in the
//!   headers). Confirmations, reminders and notices are transactional and carry none.
//!   Without `PUBLIC_CALLBACK_BASE` and `UNSUBSCRIBE_SECRET` (or for a walk-in attendee
//!   without a `people` row) no one-click link can be made: the email then carries an opt-out
//!   by reply instead (`mailto:` the practice's reply address, RFC 2369), the run warns once
//!   naming the missing setting, and an operator acts on replies with `journeyctl suppress`.
//!   The email is never held back for it: a followup that never goes out helps nobody.
//!
//! The unsubscribe token names the patient (`people.id`), not an address: no email address is
//! ever in a URL. It is `base64url(version ‖ patient id ‖ HMAC-SHA256(UNSUBSCRIBE_SECRET,
//! domain ‖ version ‖ patient id)[..16])`, 44 characters; without the secret none can be made.
//! `serve` suppresses the patient's current email address when the link is used
//! (`commands::unsubscribe`).
//!
//! This module decides nothing about stages' windows or rules; it must not log addresses.
//! The token and the links are in `optout/link.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

use super::journey::Journey;
use super::plan::{Message, Recipient};
use super::report::StageReport;
use crate::db::bookings::{DueBooking, PatientRow};
use crate::db::ledger::DeliveryKey;
use crate::db::{runs, suppressions};
use crate::domain::{Channel, Counter, EmailAddress, PhoneNumber, Stage};
use crate::notify::SendOutcome;

mod link;
pub(crate) use link::{is_marketing, reply_unsubscribe, unsubscribe_url, verify, UNSUBSCRIBE_PATH};

/// The form an address is suppressed under: an email trimmed and lower-cased (mailboxes are
/// case-insensitive in practice, and erring towards "suppressed" is the safe side), a phone
/// number in E.164.
pub(crate) fn normalise(channel: Channel, raw: &str) -> Result<String, &'static str> {
    match channel {
        Channel::Email => EmailAddress::parse(raw).map(|e| e.as_str().to_lowercase()),
        Channel::Sms => PhoneNumber::parse(raw).map(|p| p.as_str().to_string()),
    }
}

fn key_of(to: &Recipient) -> (Channel, String) {
    match to {
        Recipient::Email(e) => (Channel::Email, e.as_str().to_lowercase()),
        Recipient::Sms(p) => (Channel::Sms, p.as_str().to_string()),
    }
}

/// The suppressions that concern one batch of due bookings, looked up once.
pub(crate) struct Batch {
    suppressed: Result<HashSet<(Channel, String)>, String>,
    /// The missing setting was reported once in this batch.
    fallback_reported: AtomicBool,
}

impl Batch {
    /// Looks up every address the batch's messages could go to (patients, walk-in attendees,
    /// therapists, the QA mailbox), in one query per chunk. A failed lookup is kept: every message of the batch
    /// then counts an error instead of being sent to someone who may have opted out.
    pub(crate) async fn load(
        j: &Journey,
        due: &[DueBooking],
        patients: &Result<HashMap<Uuid, PatientRow>, String>,
    ) -> Batch {
        if due.is_empty() {
            // No booking, no address to look up (not even the QA mailbox's).
            return Batch {
                suppressed: Ok(Default::default()),
                fallback_reported: AtomicBool::new(false),
            };
        }
        let mut candidates = Vec::new();
        let mut push = |p: &PatientRow| {
            for (channel, raw) in [
                (Channel::Email, p.email.as_deref()),
                (Channel::Sms, p.phone_number.as_deref()),
            ] {
                if let Some(a) = raw.and_then(|r| normalise(channel, r).ok()) {
                    candidates.push((channel, a));
                }
            }
        };
        if let Ok(patients) = patients {
            patients.values().for_each(&mut push);
        }
        due.iter()
            .filter_map(PatientRow::attendee_of)
            .for_each(|a| push(&a));
        let others = due
            .iter()
            .filter_map(|b| b.therapist.as_ref()?.email.clone())
            .chain(
                j.settings
                    .qa_notify_email
                    .as_ref()
                    .map(|e| e.as_str().to_string()),
            );
        for raw in others {
            if let Ok(a) = normalise(Channel::Email, &raw) {
                candidates.push((Channel::Email, a));
            }
        }
        candidates.sort();
        candidates.dedup();
        let suppressed = suppressions::which_of(&j.db, &candidates)
            .await
            .map_err(|e| format!("{e:#}"));
        Batch {
            suppressed,
            fallback_reported: AtomicBool::new(false),
        }
    }
}

/// Decides whether one planned message may go on to be claimed. Returns `true` when it was
/// dealt with here (counted; not to be claimed): its recipient is suppressed, the suppression
/// lookup failed, or it is advertising that cannot carry its opt-out. An advertising email
/// that may go gets its unsubscribe link here.
pub(crate) async fn gate(
    j: &Journey,
    batch: &Batch,
    stage: Stage,
    b: &DueBooking,
    out: &mut Message,
    dry_run: bool,
    report: &mut StageReport,
) -> bool {
    let (channel, address) = key_of(&out.to);
    let suppressed = match &batch.suppressed {
        Ok(set) => set.contains(&(channel, address)),
        Err(why) => {
            report.counters.bump(Counter::Errors);
            report.failures += 1;
            let why = format!("suppression lookup failed, not sent: {why}");
            error(j, dry_run, stage, Some(b.id), &why).await;
            return true;
        }
    };
    if suppressed {
        let key = DeliveryKey {
            booking_id: b.id,
            stage: stage.ledger(),
            channel,
            role: out.role,
        };
        skip(j, stage, &key, b.patient_id, dry_run, report).await;
        return true;
    }
    if channel == Channel::Email && is_marketing(out.kind) {
        let link = match b.patient_id {
            Some(patient) => unsubscribe_url(&j.settings, patient),
            None => Err("a patient row"),
        };
        let url = match link {
            Ok(url) => url,
            Err(missing) => {
                if missing != "a patient row"
                    && !batch.fallback_reported.swap(true, Ordering::Relaxed)
                {
                    log::warn!(
                        "{stage}: advertising emails carry an opt-out by reply instead of a \
                         one-click unsubscribe link, because {missing} is not set (see README, \
                         \"Opt-outs\"); act on replies with `journeyctl suppress`"
                    );
                }
                reply_unsubscribe(&j.settings)
            }
        };
        out.context.unsubscribe_url = Some(url);
    }
    false
}

/// Counts and records one message not sent because its recipient is suppressed.
async fn skip(
    j: &Journey,
    stage: Stage,
    key: &DeliveryKey,
    patient_id: Option<Uuid>,
    dry_run: bool,
    report: &mut StageReport,
) {
    report.counters.bump(Counter::SkippedOptedOut);
    log::info!(
        "{stage}: booking {} {} {}: recipient opted out",
        key.booking_id,
        key.role,
        key.channel
    );
    if dry_run {
        return;
    }
    let reason = "recipient opted out (suppressions)";
    if let Err(e) = crate::db::ledger::record_skip(
        &j.db,
        key,
        patient_id,
        j.run_id,
        reason,
        None,
        j.clock.now(),
    )
    .await
    {
        report.counters.bump(Counter::Errors);
        report.failures += 1;
        error(j, dry_run, stage, Some(key.booking_id), &format!("{e:#}")).await;
    }
}

/// [`gate`] for one message outside a stage's batch (the webhook's cancellation notice):
/// looks its recipient up on its own. Returns `true` when it must not be sent (suppressed,
/// recorded under `key`; or the lookup failed, counted as an error).
pub(crate) async fn suppressed_one(
    j: &Journey,
    stage: Stage,
    key: &DeliveryKey,
    patient_id: Option<Uuid>,
    to: &Recipient,
    report: &mut StageReport,
) -> bool {
    match suppressions::which_of(&j.db, &[key_of(to)]).await {
        Ok(found) if found.is_empty() => false,
        Ok(_) => {
            skip(j, stage, key, patient_id, false, report).await;
            true
        }
        Err(e) => {
            report.counters.bump(Counter::Errors);
            report.failures += 1;
            let why = format!("suppression lookup failed, not sent: {e:#}");
            error(j, false, stage, Some(key.booking_id), &why).await;
            true
        }
    }
}

/// After a send: a number Twilio refused for good is suppressed. Returns `false` when that
/// could not be written (logged, `error` event written; the caller counts the error).
pub(crate) async fn after_send(
    j: &Journey,
    stage: Stage,
    booking_id: Uuid,
    to: &Recipient,
    outcome: &SendOutcome,
) -> bool {
    let reason = match outcome {
        SendOutcome::OptedOut { .. } => "twilio_stop",
        SendOutcome::Unreachable { code: 21614, .. } => "twilio_not_mobile",
        SendOutcome::Unreachable { .. } => "twilio_invalid_number",
        _ => return true,
    };
    let (channel, address) = key_of(to);
    match suppressions::add(&j.db, channel, &address, reason, "twilio").await {
        Ok(_) => {
            log::info!("{stage}: booking {booking_id}: {channel} recipient suppressed ({reason})");
            true
        }
        Err(e) => {
            let why = format!("{e:#}; the number will be tried again by later runs");
            error(j, false, stage, Some(booking_id), &why).await;
            false
        }
    }
}

async fn error(j: &Journey, dry_run: bool, stage: Stage, booking_id: Option<Uuid>, why: &str) {
    match booking_id {
        Some(id) => log::error!("{stage}: booking {id}: {why}"),
        None => log::error!("{stage}: {why}"),
    }
    if dry_run {
        return;
    }
    let props = serde_json::json!({
        "source": "optout",
        "reason": why,
        "booking_id": booking_id,
        "stage": stage.ledger_stage(),
        "run_id": j.run_id,
    });
    if let Err(e) = runs::error_event(&j.db, &props).await {
        log::error!("failed to write an error event: {e:#}");
    }
}

#[cfg(test)]
mod tests;
