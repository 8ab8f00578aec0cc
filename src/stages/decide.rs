//! The pure decision of a stage run: one selected booking, its patient and the ledger rows
//! earlier runs left → what to skip (counted, recorded), what an earlier run left in doubt,
//! and which messages go on to the gates (opt-outs, quiet hours) and to delivery. No I/O:
//! unit-tested without PostgreSQL on `stages::fixtures`.

use std::collections::HashMap;

use uuid::Uuid;

use super::confirmation_recovery::Origin;
use super::plan::{Message, MessagePlan, Plan, PlanInput};
use crate::db::bookings::DueBooking;
use crate::db::ledger::{DeliveryKey, LedgerRow};
use crate::domain::Stage;
use crate::domain::{mark_column, Channel, Counter, DeliveryStatus, RecipientRole};

/// The ledger rows earlier runs left for a page of bookings, keyed as `ledger::load` keys them.
pub(crate) type Existing = HashMap<(Uuid, Channel, RecipientRole), LedgerRow>;

/// What becomes of one selected booking, before any gate, claim or send.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Nothing is sent, counted under `counter`. With `record`, the decision goes to the
    /// ledger (closing `mark_column` when there is one), so the booking is counted once and
    /// not selected again; without, a later run decides anew.
    SkipBooking {
        counter: Counter,
        reason: &'static str,
        record: bool,
        mark_column: Option<&'static str>,
    },
    Messages(Messages),
}

/// The messages of one booking that are still this run's to decide.
#[derive(Debug, Default)]
pub(crate) struct Messages {
    /// Skipped by the rules and not decided by an earlier run: counted and recorded.
    pub skipped: Vec<SkippedMessage>,
    /// Left in doubt by an earlier run: counted `in_doubt`, never sent blindly.
    pub in_doubt: u64,
    /// To send: no row yet (and not marked sent on the booking), or a `retry` row.
    pub to_send: Vec<Message>,
}

impl Messages {
    /// Every message was sent or decided by an earlier run: the booking counts
    /// `skipped_already_sent`.
    pub(crate) fn all_done_before(&self) -> bool {
        self.skipped.is_empty() && self.in_doubt == 0 && self.to_send.is_empty()
    }
}

/// A message the rules skipped, with the ledger key its decision is recorded under.
#[derive(Debug)]
pub(crate) struct SkippedMessage {
    pub key: DeliveryKey,
    pub counter: Counter,
    pub reason: &'static str,
}

/// The decision of `stage` for one booking (`input`), given the ledger rows of earlier runs.
pub(crate) fn decide(
    stage: Stage,
    origin: Origin,
    input: &PlanInput<'_>,
    existing: &Existing,
) -> Decision {
    let messages = match super::plan_for(stage, origin, input) {
        Plan::Skip {
            counter,
            mark,
            again,
            reason,
        } => {
            return Decision::SkipBooking {
                counter,
                reason,
                record: !again,
                mark_column: mark
                    .then(|| mark_column(stage, RecipientRole::Patient))
                    .flatten(),
            }
        }
        Plan::Messages(messages) => messages,
    };
    let b = input.booking;
    let mut decided = Messages::default();
    for m in messages {
        match m {
            MessagePlan::Skip {
                channel,
                role,
                counter,
                reason,
            } => {
                if existing.contains_key(&(b.id, channel, role)) {
                    // Decided and counted by an earlier run.
                    continue;
                }
                let key = delivery_key(stage, b, channel, role);
                decided.skipped.push(SkippedMessage {
                    key,
                    counter,
                    reason,
                });
            }
            MessagePlan::Send(message) => match earlier(stage, b, &message, existing) {
                Earlier::Nothing => decided.to_send.push(*message),
                Earlier::InDoubt => decided.in_doubt += 1,
                Earlier::Done => {}
            },
        }
    }
    Decision::Messages(decided)
}

/// What earlier runs did with one message to send.
enum Earlier {
    /// Nothing, or a `retry`: this run sends it.
    Nothing,
    /// Left in doubt: not sent again.
    InDoubt,
    /// Sent, skipped, failed, expired, or marked sent on the booking.
    Done,
}

fn earlier(stage: Stage, b: &DueBooking, message: &Message, existing: &Existing) -> Earlier {
    let key = (b.id, message.to.channel(), message.role);
    match existing.get(&key).map(|r| r.status) {
        Some(DeliveryStatus::Retry) => Earlier::Nothing,
        Some(DeliveryStatus::InDoubt) => Earlier::InDoubt,
        Some(_) => Earlier::Done,
        None if is_marked(stage, message.role, b) => Earlier::Done,
        None => Earlier::Nothing,
    }
}

/// The ledger key of one message of booking `b` in `stage`.
pub(crate) fn delivery_key(
    stage: Stage,
    b: &DueBooking,
    channel: Channel,
    role: RecipientRole,
) -> DeliveryKey {
    DeliveryKey {
        booking_id: b.id,
        stage: stage.ledger(),
        channel,
        role,
    }
}

/// Whether the booking's own columns say this recipient got the stage's message already.
fn is_marked(stage: Stage, role: RecipientRole, b: &DueBooking) -> bool {
    match (stage, role) {
        (_, RecipientRole::Qa) => false,
        (Stage::ConfirmationRecovery, RecipientRole::Patient) => {
            b.client_confirmation_sent_at.is_some()
        }
        (Stage::ConfirmationRecovery, RecipientRole::Therapist) => {
            b.therapist_notification_sent_at.is_some()
        }
        _ => b.stage_mark.is_some(),
    }
}

#[cfg(test)]
mod tests;
