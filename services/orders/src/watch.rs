//! `WatchOrder`'s source of changes: one `LISTEN shop_orders` connection per process, routed
//! to the streams that watch the order it names.
//!
//! Every change of an order notifies its id in the transaction that appends its events
//! ([`CHANGES_CHANNEL`]). A stream keeps the order's folded state and, when woken for its
//! order, reads the events after the version it has and sends the order after **each** of
//! them: a watcher sees every status the order went through, in order, even when several
//! changes commit between two reads.
//!
//! Routing, not broadcasting: a notification wakes only the streams of its order (a map from
//! order id to their wake-ups), so the cost of a change does not grow with the number of open
//! streams; with a broadcast every stream woke for every change of every order, thousands of
//! wake-ups per change under load. A wake-up that arrives while its stream is busy reading is
//! kept (a stored permit), so none is lost between a read and the next wait. Notifications
//! are not delivered while the listener reconnects: after every (re)connect all streams are
//! woken once to read what they may have missed, and each stream also reads every
//! [`RESYNC`] whatever happens (a bound on staleness should a notification go missing in a
//! way the listener cannot see).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::Notify;
use uuid::Uuid;

use shop_runtime::CancellationToken;

use crate::store::CHANGES_CHANNEL;

/// How often an open stream reads its order's new events without a notification.
pub const RESYNC: Duration = Duration::from_secs(30);

/// The open streams' wake-ups, by order. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ChangeFeed {
    inner: Arc<Registry>,
}

/// Order id → (subscription number, its wake-up) of each open stream of that order.
type Watchers = HashMap<Uuid, Vec<(u64, Arc<Notify>)>>;

#[derive(Debug, Default)]
struct Registry {
    watchers: Mutex<Watchers>,
    next: std::sync::atomic::AtomicU64,
}

/// One stream's interest in one order; dropping it ends the interest.
#[derive(Debug)]
pub struct Subscription {
    order_id: Uuid,
    number: u64,
    wake: Arc<Notify>,
    feed: Arc<Registry>,
}

impl Subscription {
    /// Waits until the order may have changed since the last wake-up (returns at once when a
    /// change came while the stream was not waiting).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut watchers = self
            .feed
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = watchers.get_mut(&self.order_id) {
            list.retain(|(number, _)| *number != self.number);
            if list.is_empty() {
                watchers.remove(&self.order_id);
            }
        }
    }
}

impl Registry {
    fn wake(&self, order_id: Uuid) {
        let watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, wake) in watchers.get(&order_id).into_iter().flatten() {
            wake.notify_one();
        }
    }

    fn wake_all(&self) {
        let watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, wake) in watchers.values().flatten() {
            wake.notify_one();
        }
    }
}

impl ChangeFeed {
    /// Wake-ups for changes of `order_id` from now on.
    pub fn subscribe(&self, order_id: Uuid) -> Subscription {
        let number = self
            .inner
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        self.inner
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(order_id)
            .or_default()
            .push((number, Arc::clone(&wake)));
        Subscription {
            order_id,
            number,
            wake,
            feed: Arc::clone(&self.inner),
        }
    }

    /// Orders with an open stream.
    #[cfg(test)]
    fn watched_orders(&self) -> usize {
        self.inner
            .watchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
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
        // Changes committed while no listener was connected were not notified to anyone.
        self.inner.wake_all();
        loop {
            let notification = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                n = listener.recv() => n?,
            };
            if let Ok(id) = Uuid::parse_str(notification.payload()) {
                self.inner.wake(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn woken(subscription: &Subscription) -> bool {
        tokio::time::timeout(Duration::from_millis(50), subscription.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_change_wakes_only_the_streams_of_its_order() {
        let feed = ChangeFeed::default();
        let (mine, other) = (Uuid::new_v4(), Uuid::new_v4());
        let first = feed.subscribe(mine);
        let second = feed.subscribe(mine);
        let elsewhere = feed.subscribe(other);
        feed.inner.wake(mine);
        assert!(woken(&first).await);
        assert!(woken(&second).await);
        assert!(!woken(&elsewhere).await);
    }

    #[tokio::test]
    async fn a_change_while_the_stream_is_busy_is_kept_for_its_next_wait() {
        let feed = ChangeFeed::default();
        let order = Uuid::new_v4();
        let subscription = feed.subscribe(order);
        // Nobody waits yet: the wake-up is stored, not lost.
        feed.inner.wake(order);
        feed.inner.wake(order);
        assert!(woken(&subscription).await);
        assert!(
            !woken(&subscription).await,
            "two changes, one read covers both"
        );
    }

    #[tokio::test]
    async fn a_reconnect_wakes_everyone_and_dropped_streams_leave_the_map() {
        let feed = ChangeFeed::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = feed.subscribe(a);
        let second = feed.subscribe(b);
        assert_eq!(feed.watched_orders(), 2);
        feed.inner.wake_all();
        assert!(woken(&first).await && woken(&second).await);
        drop(first);
        assert_eq!(feed.watched_orders(), 1);
        drop(second);
        assert_eq!(feed.watched_orders(), 0);
    }
}
