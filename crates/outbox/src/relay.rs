//! The relay: moves outbox rows to JetStream.
//!
//! Each pass claims a batch with `FOR UPDATE SKIP LOCKED` (so relays in other replicas take
//! other rows), publishes every row of it concurrently, awaits the JetStream acks and marks the
//! acked rows published in the same transaction. A relay killed mid-batch rolls back: its rows
//! are claimed again and republished under the same `Nats-Msg-Id`, which JetStream's duplicate
//! window drops (and consumers' inboxes would absorb after the window).

use std::future::Future;
use std::time::Duration;

use async_nats::connection::State;
use futures::FutureExt;
use futures::future::join_all;
use shop_events::EventPublisher;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::OutboxError;
use crate::store::{self, NOTIFY_CHANNEL};

/// Relay tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Rows per claim (and per transaction).
    pub batch_size: i64,
    /// Wake-up without a notification: covers lost notifications and a lost listener.
    pub poll_interval: Duration,
    /// First pause after a failure (NATS or Postgres down); doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest pause after failures.
    pub max_backoff: Duration,
    /// Published rows older than this are deleted; `None` keeps them.
    pub retention: Option<Duration>,
    /// How often the retention cleanup runs.
    pub cleanup_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            cleanup_interval: Duration::from_secs(600),
        }
    }
}

/// Publishes outbox rows to JetStream until shut down. Run one per replica; any number may
/// run against one database.
#[derive(Debug, Clone)]
pub struct Relay {
    pool: PgPool,
    publisher: EventPublisher,
    config: RelayConfig,
}

// === impl Relay ===

impl Relay {
    /// A relay with default tuning.
    pub fn new(pool: PgPool, publisher: EventPublisher) -> Self {
        Self {
            pool,
            publisher,
            config: RelayConfig::default(),
        }
    }

    /// Replaces the tuning.
    pub fn with_config(mut self, config: RelayConfig) -> Self {
        self.config = config;
        self
    }

    /// One pass: claim a batch, publish it, mark what JetStream acked. Returns rows published.
    /// On a partial failure the acked rows are still marked and the error is returned.
    pub async fn relay_batch(&self) -> Result<usize, OutboxError> {
        // Don't lock rows only to wait out publish timeouts while the client is disconnected.
        if self.publisher.jetstream().client().connection_state() != State::Connected {
            return Err(OutboxError::NatsDisconnected);
        }
        let mut tx = self.pool.begin().await?;
        let rows = store::claim(&mut tx, self.config.batch_size).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let mut pending = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in &rows {
            match self.publisher.send(&row.event).await {
                Ok(ack) => pending.push((row.id, ack)),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let acks = join_all(
            pending
                .into_iter()
                .map(|(id, ack)| ack.ack().map(move |r| (id, r))),
        );
        let mut published = Vec::with_capacity(rows.len());
        for (id, result) in acks.await {
            match result {
                Ok(_) => published.push(id),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        store::mark_published(&mut tx, &published).await?;
        tx.commit().await?;
        match failure {
            None => Ok(published.len()),
            Some(source) => Err(OutboxError::Relay {
                published: published.len(),
                source,
            }),
        }
    }

    /// Relays until `shutdown` resolves, waking on notifications from [`crate::add`], on the
    /// poll interval, and at once while batches come back full.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), OutboxError> {
        let shutdown = shutdown.shared();
        let mut listener = self.listen().await;
        let mut backoff = self.config.min_backoff;
        let mut next_cleanup = Instant::now();
        info!(batch_size = self.config.batch_size, "outbox relay started");
        loop {
            if shutdown.clone().now_or_never().is_some() {
                return Ok(());
            }
            let wait = match self.relay_batch().await {
                Ok(n) if i64::try_from(n).unwrap_or(i64::MAX) >= self.config.batch_size => {
                    backoff = self.config.min_backoff;
                    continue;
                }
                Ok(n) => {
                    if n > 0 {
                        debug!(published = n, "outbox batch relayed");
                    }
                    backoff = self.config.min_backoff;
                    self.config.poll_interval
                }
                Err(e) => {
                    warn!(error = %e, ?backoff, "outbox relay pass failed; backing off");
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    // Notifications don't help while NATS or Postgres is away: sleep it out.
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shutdown.clone() => return Ok(()),
                    }
                    continue;
                }
            };
            if next_cleanup <= Instant::now() {
                self.cleanup().await;
                next_cleanup = Instant::now() + self.config.cleanup_interval;
            }
            if listener.is_none() {
                listener = self.listen().await;
            }
            tokio::select! {
                woke = wait_notification(&mut listener) => {
                    if !woke {
                        listener = None;
                    }
                }
                () = tokio::time::sleep(wait) => {}
                () = shutdown.clone() => return Ok(()),
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let result = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match result.await {
            Ok(listener) => Some(listener),
            Err(e) => {
                warn!(error = %e, "LISTEN failed; polling only for now");
                None
            }
        }
    }

    async fn cleanup(&self) {
        let Some(retention) = self.config.retention else {
            return;
        };
        match store::purge_published(&self.pool, retention, 10_000).await {
            Ok(0) => {}
            Ok(n) => debug!(deleted = n, "outbox retention cleanup"),
            Err(e) => warn!(error = %e, "outbox retention cleanup failed"),
        }
    }
}

/// Waits for a notification; false if the listener failed (it is then dropped and reopened).
async fn wait_notification(listener: &mut Option<PgListener>) -> bool {
    match listener {
        Some(l) => match l.recv().await {
            Ok(_) => {
                // One pass serves every commit so far: fold the backlog of wake-ups.
                while l.next_buffered().is_some() {}
                true
            }
            Err(e) => {
                warn!(error = %e, "LISTEN connection failed; polling until it is back");
                false
            }
        },
        None => std::future::pending().await,
    }
}
