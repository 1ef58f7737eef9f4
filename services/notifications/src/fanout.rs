//! Fan-out of new notifications to `WatchNotifications` streams on every replica: the
//! transaction that stores a notification announces its id with `pg_notify`; each replica
//! listens, loads the row and broadcasts it to its local watchers.

use shop_runtime::{CancellationToken, background::retry_until_stopped};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{domain::Notification, store};

/// How many notifications a slow watcher may fall behind before its stream is ended.
pub const WATCH_BUFFER: usize = 1024;

/// Listens until `stop` is cancelled, reconnecting after database outages.
pub async fn run(pool: PgPool, sender: broadcast::Sender<Notification>, stop: CancellationToken) {
    retry_until_stopped("notification listener", &stop, || {
        listen(&pool, &sender, &stop)
    })
    .await;
}

async fn listen(
    pool: &PgPool,
    sender: &broadcast::Sender<Notification>,
    stop: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(store::NOTIFY_CHANNEL).await?;
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            message = listener.recv() => message?,
        };
        let Ok(id) = Uuid::parse_str(message.payload()) else {
            tracing::warn!(
                payload = message.payload(),
                "ignoring a malformed announcement"
            );
            continue;
        };
        if let Some(notification) = store::get(pool, id).await? {
            // No watcher is not an error.
            let _ = sender.send(notification);
        }
    }
}
