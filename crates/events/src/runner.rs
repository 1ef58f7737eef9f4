//! The consumer runner: pulls from a durable consumer, dispatches to handlers, and acks, naks or
//! dead-letters each message.
//!
//! Delivery is at least once. A message is acked only after its handler returned `Ok`, i.e.
//! after the handler's transaction committed; a crash in between redelivers it, and the inbox
//! (see [`crate::inbox`]) turns the redelivery into a no-op.
//!
//! Three rules keep healthy messages from being redelivered or dead-lettered:
//!
//! - Each pull asks for as many messages as there are free handler slots, never more. The
//!   server starts a message's ack-wait clock when it sends it, so a message must not queue in
//!   a client buffer behind slow handlers.
//! - While a handler runs (and while its dead letter is stored) the runner sends a progress ack
//!   three times per `ack_wait`; the ack wait runs out only for a consumer that died or hung.
//! - Dead-lettering follows the runner's own failure count ([`crate::failures`]), not
//!   JetStream's delivery count, and the server's `max_deliver` is unlimited: a message whose
//!   dead letter cannot be stored yet stays in its stream and comes back until it can.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull::Batch};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::EventsError;
use crate::dead_letter;
use crate::envelope::EventMeta;
use crate::error::HandlerError;
use crate::failures::{FailureLog, FailureRecord};
use crate::handlers::Handlers;
use crate::metrics::ConsumerMetrics;
use crate::provision::ConsumerSpec;

pub use crate::dead_letter::{
    HEADER_DLQ_CONSUMER, HEADER_DLQ_DELIVERIES, HEADER_DLQ_ERROR, HEADER_DLQ_EVENT_ID,
    HEADER_DLQ_FAILURES, HEADER_DLQ_SEQUENCE, HEADER_DLQ_STREAM, HEADER_DLQ_SUBJECT,
};

/// How long one pull request waits on the server for messages. Short, so that handler slots
/// freed while it waits are asked for again soon.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// How often the consumer's pending count is read for the metrics (at most; once per pull).
const PENDING_REFRESH: Duration = Duration::from_secs(2);

/// How often a waiting pull checks whether the connection came back.
const RECONNECT_CHECK: Duration = Duration::from_millis(500);

/// What the runner does with an event type no handler is registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownEvents {
    /// Ack and log: a consumer is not interested in every type on its stream.
    #[default]
    Ack,
    /// Move it to the dead-letter stream.
    DeadLetter,
}

/// Runs one durable pull consumer with a set of handlers until shutdown.
#[derive(Debug, Clone)]
pub struct ConsumerRunner {
    js: jetstream::Context,
    spec: ConsumerSpec,
    handlers: Handlers,
    unknown: UnknownEvents,
    concurrency: usize,
    metrics: Option<ConsumerMetrics>,
}

/// How a delivery ends.
enum Outcome {
    /// Handled, or nothing to do. `clear`: a failure record may exist and goes.
    Ack { clear: bool },
    /// Try again after the delay; the failure (if any) is already recorded.
    Retry(Duration),
    /// Give up: store a dead letter, then term. The record is what is known so far.
    DeadLetter {
        reason: String,
        record: FailureRecord,
    },
}

/// Where a delivered message sits: its failure record key and JetStream's delivery count.
struct Position {
    key: String,
    delivered: i64,
}

// === impl ConsumerRunner ===

impl ConsumerRunner {
    /// A runner for `spec` dispatching to `handlers`, one message at a time, unknown types acked.
    pub fn new(js: jetstream::Context, spec: ConsumerSpec, handlers: Handlers) -> Self {
        Self {
            js,
            spec,
            handlers,
            unknown: UnknownEvents::Ack,
            concurrency: 1,
            metrics: None,
        }
    }

    /// Counts deliveries, redeliveries and dead letters into `metrics`, and keeps the
    /// consumer's pending count there fresh.
    pub fn with_metrics(mut self, metrics: ConsumerMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sets the policy for unknown event types.
    pub fn with_unknown_events(mut self, policy: UnknownEvents) -> Self {
        self.unknown = policy;
        self
    }

    /// Handles up to `n` messages at once (order across messages is then not kept). Pulls never
    /// ask for more than the handlers free at that moment.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Ensures the consumer and its failure log, then consumes until `shutdown` resolves;
    /// messages in flight are finished and settled before returning. Errors only if they
    /// cannot be provisioned.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), EventsError> {
        let consumer = self.spec.ensure(&self.js).await?;
        let failures =
            FailureLog::ensure(&self.js, &self.spec.durable, self.state_replicas().await?).await?;
        let shutdown = shutdown.shared();
        let mut in_flight = FuturesUnordered::new();
        let start = |message| self.process(&failures, message);
        let mut pause = Duration::from_millis(100);
        let mut pending_read: Option<std::time::Instant> = None;
        loop {
            if let Some(metrics) = &self.metrics
                && pending_read.is_none_or(|at| at.elapsed() >= PENDING_REFRESH)
            {
                pending_read = Some(std::time::Instant::now());
                match consumer.get_info().await {
                    Ok(info) => metrics.set_pending(&self.spec.durable, info.num_pending),
                    Err(e) => debug!(error = %e, "consumer info not read"),
                }
            }
            // Ask only for what free handlers can start at once: a message the server has
            // sent is on its ack-wait clock, so it must not queue in a client buffer.
            let free = self.concurrency.saturating_sub(in_flight.len());
            if free == 0 {
                in_flight.next().await;
                continue;
            }
            if shutdown.clone().now_or_never().is_some() {
                break;
            }
            let pull = consumer
                .batch()
                .max_messages(free)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let ended = match pull {
                Ok(batch) => {
                    let client = self.js.client();
                    feed(batch, &client, &mut in_flight, start, shutdown.clone()).await
                }
                Err(e) => {
                    warn!(consumer = %self.spec.durable, error = %e, "pull failed; retrying");
                    Fed::Failed
                }
            };
            match ended {
                Fed::Done => pause = Duration::from_millis(100),
                Fed::Shutdown => break,
                Fed::Failed => {
                    if idle(&mut in_flight, pause, shutdown.clone()).await {
                        break;
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        while in_flight.next().await.is_some() {}
        Ok(())
    }

    /// Replicas of the consumer's state (its own setting, else as its stream): the failure
    /// log is kept as safely as the consumer it counts for.
    async fn state_replicas(&self) -> Result<usize, EventsError> {
        if self.spec.replicas > 0 {
            return Ok(self.spec.replicas);
        }
        let stream =
            self.js
                .get_stream(&self.spec.stream)
                .await
                .map_err(|e| EventsError::Provision {
                    what: self.spec.stream.clone(),
                    source: e.into(),
                })?;
        Ok(stream.cached_info().config.num_replicas)
    }

    async fn process(&self, failures: &FailureLog, message: jetstream::Message) {
        let (position, sequence) = match message.info() {
            Ok(info) => (
                Position {
                    key: failures.key(info.stream, info.stream_sequence),
                    delivered: info.delivered,
                },
                info.stream_sequence,
            ),
            Err(e) => {
                warn!(error = %e, "message without JetStream metadata; ignored");
                return;
            }
        };
        let delivered = position.delivered;
        if delivered > 1
            && let Some(metrics) = &self.metrics
        {
            metrics.redelivered(&self.spec.durable);
        }
        let meta = EventMeta::from_headers(
            message.subject.as_str(),
            message.headers.as_ref(),
            delivered,
            sequence,
        );
        let span = info_span!(
            "event",
            otel.name = %format!("process {}", message.subject),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "nats",
            messaging.operation.type = "process",
            messaging.destination.name = %message.subject,
            messaging.consumer.group.name = %self.spec.durable,
            messaging.message.id = tracing::field::Empty,
            consumer = %self.spec.durable,
            event_type = tracing::field::Empty,
            event_id = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            delivered,
        );
        // The producer's trace (the request that wrote the event, through the outbox relay's
        // publish span) continues here.
        if let Some(headers) = message.headers.as_ref() {
            let context: shop_trace::TraceFields = shop_trace::FIELDS
                .iter()
                .filter_map(|k| {
                    headers
                        .get(*k)
                        .map(|v| ((*k).to_owned(), v.as_str().to_owned()))
                })
                .collect();
            shop_trace::set_parent(&span, &context);
        }
        if let Ok(meta) = &meta {
            span.record("event_type", meta.event_type.as_str());
            span.record("event_id", tracing::field::display(meta.id));
            span.record("messaging.message.id", tracing::field::display(meta.id));
            if let Some(c) = &meta.correlation_id {
                span.record("correlation_id", c.as_str());
            }
        }
        let work = async {
            let outcome = self.handle(failures, &position, meta, &message).await;
            self.settle(failures, &position, &message, outcome).await;
        };
        keep_alive(&message, progress_interval(self.spec.ack_wait), work)
            .instrument(span)
            .await;
    }

    async fn handle(
        &self,
        failures: &FailureLog,
        position: &Position,
        meta: Result<EventMeta, EventsError>,
        message: &jetstream::Message,
    ) -> Outcome {
        let meta = match meta {
            Ok(meta) => meta,
            Err(e) => return dead_letter(e.to_string(), FailureRecord::default()),
        };
        let tracked = position.delivered > 1;
        let mut record = match self.history(failures, position).await {
            Ok(record) => record,
            Err(settled) => return settled,
        };
        let event_type = meta.event_type.clone();
        let Some(handling) = self.handlers.dispatch(meta, message.payload.clone()) else {
            return match self.unknown {
                UnknownEvents::Ack => {
                    info!(%event_type, "no handler for event type; acked");
                    Outcome::Ack { clear: tracked }
                }
                UnknownEvents::DeadLetter => {
                    dead_letter(format!("no handler for event type {event_type}"), record)
                }
            };
        };
        if tracked {
            // Marked before it runs: if the consumer dies in the handler, the next delivery
            // counts this attempt as failed.
            record.running = Some(position.delivered);
            if let Err(e) = failures.put(&position.key, &record).await {
                warn!(error = %e, "failure record not writable; retrying later");
                return Outcome::Retry(self.spec.retry_delay(position.delivered));
            }
            record.running = None;
        }
        let result = AssertUnwindSafe(handling)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(HandlerError::transient("handler panicked")));
        match result {
            Ok(()) => Outcome::Ack { clear: tracked },
            Err(error) => self.failed(failures, position, record, &error).await,
        }
    }

    /// The failure record of a redelivery, or how to settle it without running the handler.
    async fn history(
        &self,
        failures: &FailureLog,
        position: &Position,
    ) -> Result<FailureRecord, Outcome> {
        // A first delivery has no history: no extra round trip on the common path.
        if position.delivered <= 1 {
            return Ok(FailureRecord::default());
        }
        let mut record = failures.get(&position.key).await.map_err(|e| {
            warn!(error = %e, "failure record unreadable; retrying later");
            Outcome::Retry(self.spec.retry_delay(position.delivered))
        })?;
        if record.count_unsettled() {
            warn!(failures = record.failures, "earlier delivery never settled");
        }
        if record.given_up || record.failures >= self.spec.max_deliver {
            return Err(dead_letter(record.last_error.clone(), record));
        }
        Ok(record)
    }

    /// Counts a failed attempt: dead-letter, or record it and retry after the backoff.
    async fn failed(
        &self,
        failures: &FailureLog,
        position: &Position,
        mut record: FailureRecord,
        error: &HandlerError,
    ) -> Outcome {
        record.last_error = error.to_string();
        if !error.is_transient() {
            return dead_letter(record.last_error.clone(), record);
        }
        record.failures += 1;
        if record.failures >= self.spec.max_deliver {
            return dead_letter(record.last_error.clone(), record);
        }
        // Recorded before the nak, so that the count holds whichever replica gets it next.
        if let Err(e) = failures.put(&position.key, &record).await {
            warn!(error = %e, "failure not recorded; it will not count");
        }
        let delay = self.spec.retry_delay(record.failures);
        warn!(error = %error, failures = record.failures, ?delay, "handler failed; will retry");
        Outcome::Retry(delay)
    }

    async fn settle(
        &self,
        failures: &FailureLog,
        position: &Position,
        message: &jetstream::Message,
        outcome: Outcome,
    ) {
        if !matches!(outcome, Outcome::Ack { .. }) {
            tracing::Span::current().record("otel.status_code", "ERROR");
        }
        let outcome_label = match &outcome {
            Outcome::Ack { .. } => "ack",
            Outcome::Retry(_) => "retry",
            Outcome::DeadLetter { .. } => "dead_letter",
        };
        let (kind, clear) = match outcome {
            Outcome::Ack { clear } => (AckKind::Ack, clear),
            Outcome::Retry(delay) => (AckKind::Nak(Some(delay)), false),
            Outcome::DeadLetter { reason, mut record } => {
                let stored = dead_letter::store(
                    &self.js,
                    &self.spec.durable,
                    message,
                    &reason,
                    record.failures,
                );
                match stored.await {
                    Ok(()) => {
                        if let Some(metrics) = &self.metrics {
                            metrics.dead_lettered(&self.spec.durable);
                        }
                        (AckKind::Term, true)
                    }
                    Err(e) => {
                        // Keep the original until its dead letter is stored: JetStream
                        // redelivers it without limit, and the record says to only move it.
                        warn!(error = %e, "dead-letter publish failed; will retry the move");
                        record.given_up = true;
                        record.last_error = reason;
                        if let Err(e) = failures.put(&position.key, &record).await {
                            warn!(error = %e, "failure record not writable");
                        }
                        (
                            AckKind::Nak(Some(self.spec.retry_delay(position.delivered))),
                            false,
                        )
                    }
                }
            }
        };
        if let Err(e) = message.ack_with(kind).await {
            // Not fatal: the message is redelivered after ack_wait and the inbox dedups it.
            warn!(error = %e, "ack failed");
            return;
        }
        if let Some(metrics) = &self.metrics {
            // A dead letter whose move failed is a retry, as it is acknowledged.
            let outcome = if matches!(kind, AckKind::Nak(_)) {
                "retry"
            } else {
                outcome_label
            };
            metrics.settled(&self.spec.durable, outcome);
        }
        if clear && let Err(e) = failures.clear(&position.key).await {
            // Harmless: a settled message is not delivered again; the record expires.
            debug!(error = %e, "failure record not removed");
        }
    }
}

fn dead_letter(reason: String, record: FailureRecord) -> Outcome {
    Outcome::DeadLetter { reason, record }
}

/// How a pull ended.
enum Fed {
    /// Got what it asked for, or expired.
    Done,
    /// Failed; pause before the next.
    Failed,
    /// Shutdown came first.
    Shutdown,
}

/// Starts a handler for each message of one pull, driving those in flight meanwhile.
async fn feed<F: Future<Output = ()>>(
    mut batch: Batch,
    client: &async_nats::Client,
    in_flight: &mut FuturesUnordered<F>,
    start: impl Fn(jetstream::Message) -> F,
    shutdown: impl Future<Output = ()>,
) -> Fed {
    let mut shutdown = std::pin::pin!(shutdown);
    // A server that restarted has forgotten the pull; without this the client would wait for
    // the pull's own timeout before asking again.
    let mut connection = tokio::time::interval(RECONNECT_CHECK);
    let mut was_down = false;
    loop {
        tokio::select! {
            biased;
            // Dropping the pull is safe: what the server still sends to it is redelivered
            // after the ack wait, and that is not counted as a failure.
            () = &mut shutdown => return Fed::Shutdown,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            message = batch.next() => match message {
                Some(Ok(message)) => in_flight.push(start(message)),
                Some(Err(e)) => {
                    debug!(error = %e, "pull ended");
                    return Fed::Failed;
                }
                None => return Fed::Done,
            },
            _ = connection.tick() => {
                let up = client.connection_state() == async_nats::connection::State::Connected;
                if up && was_down {
                    debug!("reconnected; pulling again");
                    return Fed::Done;
                }
                was_down = !up;
            }
        }
    }
}

/// Waits `pause` while driving the handlers in flight; true if shutdown came first.
async fn idle<F: Future<Output = ()>>(
    in_flight: &mut FuturesUnordered<F>,
    pause: Duration,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let sleep = tokio::time::sleep(pause);
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return false,
            () = &mut shutdown => return true,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
}

/// How often a running handler tells the server it is still at work: three times per ack
/// wait, so that one lost progress ack does not let the wait run out.
fn progress_interval(ack_wait: Duration) -> Duration {
    (ack_wait / 3).max(Duration::from_millis(10))
}

/// Runs `work`, sending a progress ack for `message` every `every` until it finishes: the ack
/// wait then only runs out for a consumer that died or hung, however long a handler takes.
async fn keep_alive<F: Future>(
    message: &jetstream::Message,
    every: Duration,
    work: F,
) -> F::Output {
    let mut work = std::pin::pin!(work);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticks.tick() => {
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    debug!(error = %e, "progress ack failed");
                }
            }
        }
    }
}
