//! Groups the send-started stamps of a batch's concurrent sends into few statements.
//!
//! Every send of a batch claim waits for its row's stamp to commit before the provider is
//! contacted (see `db/ledger.rs`). One task per batch takes the stamp requests: while a
//! stamping statement is in flight, the requests that arrive queue up and go together in the
//! next one. A message is only ever stamped when its own send asked for it, so a run killed
//! mid-batch leaves no stamp on a message that was not about to be sent. A confirmation is
//! stamped only while its booking is still active: judged right before it is sent, however
//! long ago its batch was claimed.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::db::ledger::{self, Stamp};
use crate::db::Db;

/// At most this many stamps per statement: the batch's concurrency is far below it; it only
/// bounds one statement's array.
const MAX_PER_STATEMENT: usize = 256;

type Reply = oneshot::Sender<Result<Option<Stamp>, String>>;

/// The handle sends use to ask for their stamp. The stamping task ends when the last handle
/// is dropped.
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

    /// Stamps one delivery as being sent, committed when this returns
    /// `Ok(Some(Stamp::Stamped))`. `Ok(Some(Stamp::Inactive))`: its booking is no longer
    /// active, not to be sent. `Ok(None)`: the row is no longer this run's claim (given back
    /// or taken by another run): not to be sent.
    pub(crate) async fn stamp(&self, delivery_id: Uuid) -> anyhow::Result<Option<Stamp>> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((delivery_id, reply))
            .map_err(|_| anyhow::anyhow!("the send-started stamping task has stopped"))?;
        match answer.await {
            Ok(Ok(stamped)) => Ok(stamped),
            Ok(Err(e)) => Err(anyhow::anyhow!(e)),
            Err(_) => anyhow::bail!("the send-started stamping task has stopped"),
        }
    }
}

async fn stamp_loop(
    db: Db,
    run_id: Uuid,
    require_active: bool,
    mut rx: mpsc::UnboundedReceiver<(Uuid, Reply)>,
) {
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while waiting.len() < MAX_PER_STATEMENT {
            match rx.try_recv() {
                Ok(r) => waiting.push(r),
                Err(_) => break,
            }
        }
        let ids: Vec<Uuid> = waiting.iter().map(|(id, _)| *id).collect();
        let stamped: Result<HashMap<Uuid, Stamp>, String> = match db.client().await {
            Ok(c) => ledger::mark_sends_started(&c, &ids, run_id, require_active)
                .await
                .map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!("{e:#}")),
        };
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
}
