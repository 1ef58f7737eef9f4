//! The relay: moves outbox rows to JetStream.
//!
//! Each pass claims a batch with `FOR UPDATE SKIP LOCKED` (so relays in other replicas take
//! other rows), publishes every row of it concurrently, awaits the JetStream acks and marks the
//! acked rows published in the same transaction. A relay killed mid-batch rolls back: its rows
//! are claimed again and republished under the same `Nats-Msg-Id`, which JetStream's duplicate
//! window drops (and consumers' inboxes would absorb after the window).
//!
//! A row the server refuses for itself ([`crate::classify`]: too large, invalid subject, no
//! stream for its subject) does not stop the batch: its attempt is counted, it waits
//! `retry_delay` (doubling) before it is claimed again, and after `park_after` attempts it
//! moves to `outbox_dead_letters`. Connection trouble never counts: the pass ends and the relay
//! backs off, the rows waiting as they were.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_nats::connection::State;
use futures::FutureExt;
use futures::future::join_all;
use shop_events::{EventPublisher, EventsError};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use tracing::{Instrument as _, debug, error, info, warn};

use crate::OutboxError;
use crate::classify::{Failure, classify, confirm_no_stream};
use crate::metrics::RelayMetrics;
use crate::store::{self, Claimed, NOTIFY_CHANNEL};
use shop_events::EncodedEvent;

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
    /// Attempts the server refuses a row for itself before the row is parked in
    /// `outbox_dead_letters` (at least 1). Connection trouble never counts.
    pub park_after: u32,
    /// Wait before a refused row is tried again; doubles with each attempt, up to 64 times.
    pub retry_delay: Duration,
    /// How often the [`RelayMetrics`] gauges are read from the database.
    pub metrics_interval: Duration,
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
            park_after: 5,
            retry_delay: Duration::from_secs(2),
            metrics_interval: Duration::from_secs(15),
        }
    }
}

impl RelayConfig {
    /// The wait after a row's `attempts`-th refusal.
    fn retry_after(&self, attempts: u32) -> Duration {
        self.retry_delay * 2u32.pow(attempts.saturating_sub(1).min(6))
    }
}

/// Publishes outbox rows to JetStream until shut down. Run one per replica; any number may
/// run against one database.
#[derive(Debug, Clone)]
pub struct Relay {
    pool: PgPool,
    publisher: EventPublisher,
    config: RelayConfig,
    metrics: RelayMetrics,
}

/// What one pass did.
#[derive(Debug, Default)]
struct Pass {
    claimed: usize,
    published: usize,
    parked: usize,
    /// The first connection-type failure; the pass stopped sending there.
    transient: Option<EventsError>,
}

// === impl Pass ===

impl Pass {
    /// An error if the pass met connection trouble (the relay backs off), else itself.
    fn into_result(self) -> Result<Self, OutboxError> {
        match self.transient {
            None => Ok(self),
            Some(source) => Err(OutboxError::Relay {
                published: self.published,
                source,
            }),
        }
    }
}

// === impl Relay ===

impl Relay {
    /// A relay with default tuning.
    pub fn new(pool: PgPool, publisher: EventPublisher) -> Self {
        Self {
            pool,
            publisher,
            config: RelayConfig::default(),
            metrics: RelayMetrics::default(),
        }
    }

    /// Replaces the tuning.
    pub fn with_config(mut self, config: RelayConfig) -> Self {
        self.config = config;
        self
    }

    /// Keeps `metrics` (registered by the service) up to date while [`Relay::run`] runs.
    pub fn with_metrics(mut self, metrics: RelayMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// One pass: claim a batch, publish it, mark what JetStream acked, count or park what the
    /// server refused. Returns rows published. On connection trouble the acked rows are
    /// still marked and the error is returned.
    pub async fn relay_batch(&self) -> Result<usize, OutboxError> {
        self.pass()
            .await
            .and_then(Pass::into_result)
            .map(|p| p.published)
    }

    async fn pass(&self) -> Result<Pass, OutboxError> {
        // Don't lock rows only to wait out publish timeouts while the client is disconnected.
        if self.publisher.jetstream().client().connection_state() != State::Connected {
            return Err(OutboxError::NatsDisconnected);
        }
        let mut tx = self.pool.begin().await?;
        let rows = store::claim(&mut tx, self.config.batch_size).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(Pass::default());
        }
        let mut pass = Pass {
            claimed: rows.len(),
            ..Pass::default()
        };
        let mut pending = Vec::with_capacity(rows.len());
        let mut refused = Vec::new();
        for row in &rows {
            let span = publish_span(&row.event);
            let event = traced(&row.event, &span);
            match self.publisher.send(&event).instrument(span.clone()).await {
                Ok(ack) => pending.push((row, ack, span)),
                Err(e) => match classify(&e) {
                    // The rest would wait out the same trouble, one timeout each.
                    Failure::Transient => {
                        pass.transient = Some(e);
                        break;
                    }
                    failure => refused.push((row, failure)),
                },
            }
        }
        let acks = join_all(pending.into_iter().map(|(row, ack, span)| {
            ack.ack().map(move |r| {
                if r.is_err() {
                    span.record("otel.status_code", "ERROR");
                }
                (row, r)
            })
        }));
        let mut published = Vec::with_capacity(rows.len());
        for (row, result) in acks.await {
            match result {
                Ok(_) => published.push(row.id),
                Err(e) => match classify(&e) {
                    Failure::Transient => pass.transient = pass.transient.or(Some(e)),
                    failure => refused.push((row, failure)),
                },
            }
        }
        store::mark_published(&mut tx, &published).await?;
        pass.published = published.len();
        let mut lookups = HashMap::new();
        for (row, failure) in refused {
            let failure = match failure {
                Failure::NoResponders => {
                    let subject = row.event.subject.as_str();
                    if !lookups.contains_key(subject) {
                        let js = self.publisher.jetstream();
                        lookups.insert(subject, confirm_no_stream(js, subject).await);
                    }
                    lookups.get(subject).cloned().unwrap_or(Failure::Transient)
                }
                other => other,
            };
            match failure {
                Failure::Permanent(reason) => {
                    pass.parked += usize::from(self.refused(&mut tx, row, &reason).await?);
                }
                Failure::Transient | Failure::NoResponders => {
                    pass.transient = pass.transient.or_else(|| {
                        Some(EventsError::Envelope(format!(
                            "no responders for {}, and JetStream did not say why",
                            row.event.subject
                        )))
                    });
                }
            }
        }
        tx.commit().await?;
        Ok(pass)
    }

    /// Counts a refusal of `row`; parks it when it has had its attempts. True if parked.
    async fn refused(
        &self,
        tx: &mut PgConnection,
        row: &Claimed,
        reason: &str,
    ) -> Result<bool, OutboxError> {
        let attempts = u32::try_from(row.attempts).unwrap_or(0).saturating_add(1);
        if attempts >= self.config.park_after.max(1) {
            error!(event_id = %row.event.id, subject = %row.event.subject, attempts, reason, "outbox row parked in outbox_dead_letters");
            store::park(tx, row.id, reason).await?;
            return Ok(true);
        }
        let retry_in = self.config.retry_after(attempts);
        warn!(event_id = %row.event.id, subject = %row.event.subject, attempts, ?retry_in, reason, "server refused outbox row");
        store::record_failure(tx, row.id, reason, retry_in).await?;
        Ok(false)
    }

    /// Relays until `shutdown` resolves, waking on notifications from [`crate::add`], on the
    /// poll interval, and at once while batches come back full.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), OutboxError> {
        let shutdown = shutdown.shared();
        let mut listener = self.listen().await;
        let mut backoff = self.config.min_backoff;
        let mut next_cleanup = Instant::now();
        let mut next_metrics = Instant::now();
        info!(batch_size = self.config.batch_size, "outbox relay started");
        loop {
            if shutdown.clone().now_or_never().is_some() {
                return Ok(());
            }
            let pass = self.pass().await;
            let parked = pass.as_ref().map_or(0, |p| p.parked);
            if parked > 0 || next_metrics <= Instant::now() {
                self.refresh_metrics().await;
                next_metrics = Instant::now() + self.config.metrics_interval;
            }
            let wait = match pass.and_then(Pass::into_result) {
                Ok(p) if i64::try_from(p.claimed).unwrap_or(i64::MAX) >= self.config.batch_size => {
                    backoff = self.config.min_backoff;
                    continue;
                }
                Ok(p) => {
                    if p.published > 0 {
                        debug!(published = p.published, "outbox batch relayed");
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

    async fn refresh_metrics(&self) {
        if let Err(e) = self.metrics.refresh(&self.pool).await {
            warn!(error = %e, "reading outbox metrics failed");
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

/// The producer span of one row's publish: a child of the context the row was written under
/// (the request that wrote it), named and attributed after the OpenTelemetry messaging
/// conventions. It ends when JetStream acks (or refuses) the message.
fn publish_span(event: &EncodedEvent) -> tracing::Span {
    let span = tracing::info_span!(
        "outbox publish",
        otel.name = %format!("send {}", event.subject),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.destination.name = %event.subject,
        messaging.message.id = %event.id,
        event_type = %event.event_type,
    );
    shop_trace::set_parent(&span, &event.headers);
    span
}

/// `event` with its trace headers replaced by `span`'s context, so that the consumer's span is
/// a child of the publish; `event` itself when tracing is off.
fn traced<'a>(event: &'a EncodedEvent, span: &tracing::Span) -> Cow<'a, EncodedEvent> {
    let context = shop_trace::context_fields(span);
    if context.is_empty() {
        return Cow::Borrowed(event);
    }
    let mut traced = event.clone();
    traced.headers.extend(context);
    Cow::Owned(traced)
}
