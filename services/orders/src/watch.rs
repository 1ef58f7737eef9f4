//! `WatchOrder`'s source of changes: one `LISTEN shop_orders` connection per process, fanned
//! out to every open stream.
//!
//! Every change of an order notifies its id in the transaction that appends its events
//! ([`CHANGES_CHANNEL`]). A stream keeps the order's folded state and, on a notification for
//! its order (or every [`RESYNC`], in case one was missed while the listener reconnected),
//! reads the events after the version it has and sends the order after **each** of them: a
//! watcher sees every status the order went through, in order, even when several changes
//! commit between two reads.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::broadcast;
use uuid::Uuid;

use shop_runtime::CancellationToken;

use crate::store::CHANGES_CHANNEL;

/// How often an open stream reads its order's new events without a notification.
pub const RESYNC: Duration = Duration::from_secs(1);

/// Notifications buffered per stream; a stream that falls further behind resyncs (it reads
/// from its version, so it loses nothing).
const BUFFER: usize = 1024;

/// The fan-out of change notifications. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    sender: broadcast::Sender<Uuid>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BUFFER).0,
        }
    }
}

impl ChangeFeed {
    /// Notifications from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.sender.subscribe()
    }

    /// Listens on `pool`'s database until `stop`, reconnecting with backoff.
    pub async fn run(self, pool: PgPool, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            match self.listen(&pool, &stop).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "order change listener lost; reconnecting");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn listen(&self, pool: &PgPool, stop: &CancellationToken) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        loop {
            let notification = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                n = listener.recv() => n?,
            };
            if let Ok(id) = Uuid::parse_str(notification.payload()) {
                // No receivers is fine: nobody is watching.
                let _ = self.sender.send(id);
            }
        }
    }
}
