//! `journeyctl resolve ID --as sent|retry`: an operator settles a delivery in doubt (the
//! write itself is `db::reports::resolve`).

use uuid::Uuid;

use crate::cli::GlobalArgs;
use crate::clock::Clock;
use crate::config;
use crate::db::{self, reports};
use crate::domain::DeliveryStatus;
use crate::exit::ExitStatus;

/// `resolve` settles one row in one transaction: one connection.
const RESOLVE_CONNECTIONS: usize = 1;

/// `journeyctl resolve ID --as sent|retry`
pub(crate) async fn resolve(
    g: &GlobalArgs,
    clock: Clock,
    id: Uuid,
    sent: bool,
) -> anyhow::Result<ExitStatus> {
    let db = db::connect(&config::database_url(g)?, RESOLVE_CONNECTIONS).await?;
    match reports::resolve(&db, id, sent, clock.now()).await? {
        None => {
            eprintln!("resolve: no delivery {id}; `journeyctl status` lists the ones in doubt");
            Ok(ExitStatus::Failed)
        }
        Some(d) if d.status != DeliveryStatus::InDoubt => {
            eprintln!(
                "resolve: delivery {id} is '{}', not in_doubt; nothing changed",
                d.status
            );
            Ok(ExitStatus::Failed)
        }
        Some(d) => {
            crate::outln!(
                "delivery {id} ({} {} {} of booking {}) is now {}",
                d.stage,
                d.recipient_role,
                d.channel,
                d.booking_id,
                if sent {
                    "sent"
                } else {
                    "retry: the next run inside the window sends it"
                }
            );
            Ok(ExitStatus::Ok)
        }
    }
}
