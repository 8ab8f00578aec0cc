//! Claiming a batch of deliveries: one statement per channel, the answers back in the
//! deliveries' order, the claimed ids noted as not yet sent (`stages::batch` gives back what
//! was never handed to a provider).

use super::batch::{Client, Unsent};
use super::deliver::Delivery;
use super::journey::Journey;
use crate::db::ledger::{self, Claim};
use crate::domain::Channel;

/// A batch's deliveries, each with its claim's answer (`None`: not claimed).
type ClaimedBatch = Vec<(Delivery, Option<anyhow::Result<Claim>>)>;

/// Claims one batch of deliveries in one statement per channel. Deliveries whose channel is
/// stopped, or all of them once the run is stopping, are not claimed (`deliver` counts them
/// for the next run).
pub(crate) async fn claim_batch(
    j: &Journey,
    client: &Client,
    batch: Vec<Delivery>,
    unsent: &Unsent,
) -> ClaimedBatch {
    let stopping = j.control.stopped().is_some();
    let (claim, skip): (Vec<Delivery>, Vec<Delivery>) = batch
        .into_iter()
        .partition(|d| !stopping && !j.control.channel_stopped(d.key.channel));
    let mut out: ClaimedBatch = skip.into_iter().map(|d| (d, None)).collect();
    if claim.is_empty() {
        return out;
    }
    match claim_by_channel(j, client, &claim).await {
        Ok(claims) => {
            if let Ok(mut u) = unsent.lock() {
                u.extend(claims.iter().filter_map(|c| match c {
                    Claim::Claimed { id, .. } => Some(*id),
                    _ => None,
                }));
            }
            out.extend(claim.into_iter().zip(claims).map(|(d, c)| (d, Some(Ok(c)))));
        }
        Err(e) => {
            let why = format!("{e:#}");
            out.extend(
                claim
                    .into_iter()
                    .map(|d| (d, Some(Err(anyhow::anyhow!("{why}"))))),
            );
        }
    }
    out
}

/// One claim statement per channel, side by side on their own connections: the email and
/// the SMS of a booking are independent, and a claim waiting on another run's uncommitted row
/// of one channel does not hold up the other. The answers come back in `claim`'s order.
async fn claim_by_channel(
    j: &Journey,
    client: &Client,
    claim: &[Delivery],
) -> anyhow::Result<Vec<Claim>> {
    let ledger_stage = claim[0].key.stage;
    let channels: Vec<Channel> = {
        let mut c: Vec<Channel> = claim.iter().map(|d| d.key.channel).collect();
        c.sort_by_key(|ch| ch.as_str());
        c.dedup();
        c
    };
    let claims = channels.iter().enumerate().map(|(i, &channel)| {
        let items: Vec<ledger::BatchClaim<'_>> = claim
            .iter()
            .filter(|d| d.key.channel == channel)
            .map(|d| ledger::BatchClaim {
                key: &d.key,
                patient_id: d.patient_id,
                recipient_masked: d.message.to.masked(),
            })
            .collect();
        async move {
            let other;
            let conn = if i == 0 {
                client
            } else {
                other = j.db.client().await?;
                &other
            };
            ledger::claim_batch(
                conn,
                ledger_stage.as_str(),
                &items,
                j.run_id,
                &j.application_name,
                &j.message_id_domain,
                super::batch::requires_active(ledger_stage),
            )
            .await
        }
    });
    let mut per_channel = Vec::new();
    for answered in futures::future::join_all(claims).await {
        per_channel.push(answered?.into_iter());
    }
    // Back in the deliveries' order: each channel's answers are in its deliveries' order.
    claim
        .iter()
        .map(|d| {
            let i = channels.iter().position(|&c| c == d.key.channel);
            i.and_then(|i| per_channel[i].next())
                .ok_or_else(|| anyhow::anyhow!("the batch claim left a message unanswered"))
        })
        .collect()
}
