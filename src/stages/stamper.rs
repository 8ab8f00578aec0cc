//! Groups the send-started stamps of a batch's concurrent sends into few statements.
//!
//! Every send of a batch claim waits for its row's stamp to commit before the provider can
//! have the message (see `db/ledger.rs`). The send asks for its stamp as it starts and, while
//! the stamp commits, does what it can short of handing the message over: for SMTP the
//! connection and the envelope, up to the relay's 354 (`notify::Gate`). One task per batch
//! takes the stamp requests: while a stamping statement is in flight, the requests that
//! arrive queue up and go together in the next one. A message is only ever stamped when its
//! own send asked for it, so a run killed mid-batch leaves no stamp on a message that was not
//! about to be sent. A confirmation is stamped only while its booking is still active: judged
//! right before it is sent, however long ago its batch was claimed.

use std::collections::HashMap;

use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::db::ledger::{Stamp, StampSession};
use crate::db::Db;

/// At most this many stamps per statement: the batch's concurrency is far below it; it only
/// bounds one statement's array.
const MAX_PER_STATEMENT: usize = 256;

type Reply = oneshot::Sender<Result<Option<Stamp>, String>>;

/// The handle sends use to ask for their stamp ([`Stamper::request`]). The stamping task
/// ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct Stamper {
    requests: mpsc::UnboundedSender<(Uuid, Reply)>,
}

impl Stamper {
    /// Starts the stamping task of one run's batch; with `require_active` (confirmations) a
    /// delivery is stamped only while its booking is active.
    pub(crate) fn start(db: Db, run_id: Uuid, require_active: bool) -> Stamper {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(stamp_loop(db, run_id, require_active, rx));
        Stamper { requests }
    }

    /// Asks for one delivery's stamp now; the answer comes later ([`PendingStamp`]), so the
    /// send can prepare everything short of handing the message over while the stamp commits.
    pub(crate) fn request(&self, delivery_id: Uuid) -> PendingStamp {
        let (reply, answer) = oneshot::channel();
        // Refused when the task has stopped: `reply` is dropped with it, and the answer says so.
        let _ = self.requests.send((delivery_id, reply));
        let answer = async move {
            let why = match answer.await {
                Ok(Ok(Some(stamp))) => return Ok(stamp),
                Ok(Ok(None)) => {
                    return Err(format!(
                        "delivery {delivery_id} is no longer this run's claim (given back after \
                         its lease passed, or taken by another run): not sent by this run"
                    ))
                }
                Ok(Err(e)) => e,
                Err(_) => "the send-started stamping task has stopped".to_string(),
            };
            Err(format!("{why}; not sent, given back for the next run"))
        };
        PendingStamp(answer.boxed().shared())
    }
}

/// A requested stamp. Its answer: `Ok(Stamp::Stamped)`, committed: the message may be handed
/// over; `Ok(Stamp::Inactive)`: its booking is no longer active, not to be sent; `Err(why)`:
/// not stamped (the row is no longer this run's claim, or the statement failed), not to be
/// sent. Cloned, every clone gets the same answer.
#[derive(Clone)]
pub(crate) struct PendingStamp(Shared<BoxFuture<'static, Result<Stamp, String>>>);

impl PendingStamp {
    /// The answer, once the stamp's statement is done.
    pub(crate) async fn answer(self) -> Result<Stamp, String> {
        self.0.await
    }

    /// What a sender waits for right before the provider can have the message: `true` once
    /// the stamp is committed.
    pub(crate) fn gate(&self) -> crate::notify::Gate {
        let answer = self.0.clone();
        async move { matches!(answer.await, Ok(Stamp::Stamped)) }.boxed()
    }
}

async fn stamp_loop(
    db: Db,
    run_id: Uuid,
    require_active: bool,
    mut rx: mpsc::UnboundedReceiver<(Uuid, Reply)>,
) {
    // Opened at the first request, kept for the batch (its prepared stamp with it), and
    // opened again after a statement failed: the next request may find the database back.
    let mut session: Option<StampSession> = None;
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while waiting.len() < MAX_PER_STATEMENT {
            match rx.try_recv() {
                Ok(r) => waiting.push(r),
                Err(_) => break,
            }
        }
        let ids: Vec<Uuid> = waiting.iter().map(|(id, _)| *id).collect();
        let stamped = stamp(&db, &mut session, &ids, run_id, require_active).await;
        for (id, reply) in waiting {
            // A send that stopped waiting (its run was cut short) needs no answer.
            let _ = reply.send(
                stamped
                    .as_ref()
                    .map(|s| s.get(&id).copied())
                    .map_err(Clone::clone),
            );
        }
    }
    if let Some(s) = session {
        s.finish().await;
    }
}

/// One stamping statement on the batch's session, opening it when there is none; a failure
/// drops the session (its connection is closed, not pooled).
async fn stamp(
    db: &Db,
    session: &mut Option<StampSession>,
    ids: &[Uuid],
    run_id: Uuid,
    require_active: bool,
) -> Result<HashMap<Uuid, Stamp>, String> {
    let s = match session.take() {
        Some(s) => s,
        None => StampSession::open(db).await.map_err(|e| format!("{e:#}"))?,
    };
    let stamped = s.stamp(ids, run_id, require_active).await;
    if stamped.is_ok() {
        *session = Some(s);
    }
    stamped.map_err(|e| format!("{e:#}"))
}
