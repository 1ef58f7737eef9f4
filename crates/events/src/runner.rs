//! The consumer runner: pulls from a durable consumer, dispatches to handlers, and acks, naks or
//! dead-letters each message.
//!
//! Delivery is at least once. A message is acked only after its handler returned `Ok`, i.e.
//! after the handler's transaction committed; a crash in between redelivers it, and the inbox
//! (see [`crate::inbox`]) turns the redelivery into a no-op.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, message::PublishMessage};
use futures::{FutureExt, StreamExt};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::EventsError;
use crate::envelope::{EventMeta, HEADER_MSG_ID};
use crate::error::HandlerError;
use crate::handlers::Handlers;
use crate::provision::{ConsumerSpec, DLQ_SUBJECT_PREFIX};

/// Dead-letter header: why the message was given up on.
pub const HEADER_DLQ_ERROR: &str = "shop-dlq-error";
/// Dead-letter header: durable consumer that gave up.
pub const HEADER_DLQ_CONSUMER: &str = "shop-dlq-consumer";
/// Dead-letter header: original stream.
pub const HEADER_DLQ_STREAM: &str = "shop-dlq-stream";
/// Dead-letter header: original subject.
pub const HEADER_DLQ_SUBJECT: &str = "shop-dlq-subject";
/// Dead-letter header: original stream sequence.
pub const HEADER_DLQ_SEQUENCE: &str = "shop-dlq-stream-sequence";
/// Dead-letter header: deliveries made.
pub const HEADER_DLQ_DELIVERIES: &str = "shop-dlq-deliveries";
/// Dead-letter header: the original `Nats-Msg-Id` (the event id); the dead letter's own
/// `Nats-Msg-Id` is `<consumer>:<stream>:<sequence>` so that a retried move is stored once.
pub const HEADER_DLQ_EVENT_ID: &str = "shop-dlq-event-id";

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
}

enum Outcome {
    Ack,
    Retry(Duration),
    DeadLetter(String),
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
        }
    }

    /// Sets the policy for unknown event types.
    pub fn with_unknown_events(mut self, policy: UnknownEvents) -> Self {
        self.unknown = policy;
        self
    }

    /// Handles up to `n` messages at once (order across messages is then not kept).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Ensures the consumer, then consumes until `shutdown` resolves; messages in flight are
    /// finished and acked before returning. Errors only if the consumer cannot be provisioned.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), EventsError> {
        let consumer = self.spec.ensure(&self.js).await?;
        let shutdown = shutdown.shared();
        let mut pause = Duration::from_millis(100);
        loop {
            let messages = match consumer.messages().await {
                Ok(messages) => messages,
                Err(e) => {
                    warn!(consumer = %self.spec.durable, error = %e, "pull failed; retrying");
                    if sleep_or_shutdown(pause, shutdown.clone()).await {
                        return Ok(());
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            pause = Duration::from_millis(100);
            let this = &self;
            messages
                .take_until(shutdown.clone())
                .for_each_concurrent(self.concurrency, |message| async move {
                    match message {
                        Ok(message) => this.process(message).await,
                        Err(e) => warn!(consumer = %this.spec.durable, error = %e, "pull error"),
                    }
                })
                .await;
            if shutdown.clone().now_or_never().is_some() {
                return Ok(());
            }
        }
    }

    async fn process(&self, message: jetstream::Message) {
        let (delivered, sequence) = match message.info() {
            Ok(info) => (info.delivered, info.stream_sequence),
            Err(e) => {
                warn!(error = %e, "message without JetStream metadata; ignored");
                return;
            }
        };
        let meta = EventMeta::from_headers(
            message.subject.as_str(),
            message.headers.as_ref(),
            delivered,
            sequence,
        );
        let span = info_span!(
            "event",
            consumer = %self.spec.durable,
            event_type = tracing::field::Empty,
            event_id = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            traceparent = tracing::field::Empty,
            delivered,
        );
        if let Ok(meta) = &meta {
            span.record("event_type", meta.event_type.as_str());
            span.record("event_id", tracing::field::display(meta.id));
            if let Some(c) = &meta.correlation_id {
                span.record("correlation_id", c.as_str());
            }
            if let Some(t) = &meta.traceparent {
                span.record("traceparent", t.as_str());
            }
        }
        let outcome = self.handle(meta, &message).instrument(span.clone()).await;
        self.settle(&message, outcome).instrument(span).await;
    }

    async fn handle(
        &self,
        meta: Result<EventMeta, EventsError>,
        message: &jetstream::Message,
    ) -> Outcome {
        let meta = match meta {
            Ok(meta) => meta,
            Err(e) => return Outcome::DeadLetter(e.to_string()),
        };
        if meta.delivered > self.spec.max_deliver {
            return Outcome::DeadLetter(format!(
                "no result after {} deliveries (handler crashed or exceeded ack wait)",
                self.spec.max_deliver
            ));
        }
        let delivered = meta.delivered;
        let event_type = meta.event_type.clone();
        let Some(handling) = self.handlers.dispatch(meta, message.payload.clone()) else {
            return match self.unknown {
                UnknownEvents::Ack => {
                    info!(%event_type, "no handler for event type; acked");
                    Outcome::Ack
                }
                UnknownEvents::DeadLetter => {
                    Outcome::DeadLetter(format!("no handler for event type {event_type}"))
                }
            };
        };
        let result = AssertUnwindSafe(handling)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(HandlerError::transient("handler panicked")));
        match result {
            Ok(()) => Outcome::Ack,
            Err(e) if e.is_transient() && delivered < self.spec.max_deliver => {
                let delay = self.spec.retry_delay(delivered);
                warn!(error = %e, ?delay, "handler failed; will retry");
                Outcome::Retry(delay)
            }
            Err(e) => Outcome::DeadLetter(e.to_string()),
        }
    }

    async fn settle(&self, message: &jetstream::Message, outcome: Outcome) {
        let kind = match outcome {
            Outcome::Ack => AckKind::Ack,
            Outcome::Retry(delay) => AckKind::Nak(Some(delay)),
            Outcome::DeadLetter(reason) => match self.dead_letter(message, &reason).await {
                Ok(()) => AckKind::Term,
                Err(e) => {
                    // Keep it in the stream; it comes back and the move is tried again.
                    warn!(error = %e, "dead-letter publish failed; nak");
                    AckKind::Nak(Some(self.spec.retry_delay(1)))
                }
            },
        };
        if let Err(e) = message.ack_with(kind).await {
            // Not fatal: the message is redelivered after ack_wait and the inbox dedups it.
            warn!(error = %e, "ack failed");
        }
    }

    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        reason: &str,
    ) -> Result<(), EventsError> {
        let info = message
            .info()
            .map_err(|e| EventsError::Envelope(e.to_string()))?;
        let subject = format!(
            "{DLQ_SUBJECT_PREFIX}.{}.{}",
            self.spec.durable, message.subject
        );
        let mut headers = message.headers.clone().unwrap_or_default();
        if let Some(id) = headers.get(HEADER_MSG_ID).map(|v| v.as_str().to_owned()) {
            headers.insert(HEADER_DLQ_EVENT_ID, id);
        }
        // Dedup key of the dead letter itself: a retried move stores it once.
        let dlq_id = format!(
            "{}:{}:{}",
            self.spec.durable, info.stream, info.stream_sequence
        );
        headers.insert(HEADER_MSG_ID, dlq_id.as_str());
        headers.insert(HEADER_DLQ_ERROR, header_safe(reason).as_str());
        headers.insert(HEADER_DLQ_CONSUMER, self.spec.durable.as_str());
        headers.insert(HEADER_DLQ_STREAM, info.stream);
        headers.insert(HEADER_DLQ_SUBJECT, message.subject.as_str());
        headers.insert(HEADER_DLQ_SEQUENCE, info.stream_sequence.to_string());
        headers.insert(HEADER_DLQ_DELIVERIES, info.delivered.to_string());
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers);
        let publish_error = |e: async_nats::Error| EventsError::Publish {
            subject: subject.clone(),
            source: e,
        };
        self.js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| publish_error(e.into()))?
            .await
            .map_err(|e| publish_error(e.into()))?;
        warn!(%subject, %reason, "moved to dead-letter stream");
        debug!(sequence = info.stream_sequence, "dead-lettered");
        Ok(())
    }
}

/// Header values are one line of printable text; keep error texts readable and bounded.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect()
}

/// Sleeps; true when shutdown came first.
async fn sleep_or_shutdown(pause: Duration, shutdown: impl Future<Output = ()>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(pause) => false,
        () = shutdown => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_safe_flattens_and_bounds() {
        assert_eq!(header_safe("a\r\nb"), "a  b");
        assert_eq!(header_safe(&"x".repeat(5000)).len(), 1024);
    }
}
