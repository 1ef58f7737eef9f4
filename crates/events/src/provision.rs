//! Idempotent provisioning of streams and durable pull consumers, run at every start-up.
//!
//! Create-or-update calls make start-up converge: the first replica creates, later ones find
//! the same config, and a changed config (replicas, duplicate window, ack wait) is applied.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::EventsError;

/// Name of the dead-letter stream.
pub const DLQ_STREAM: &str = "SHOP_DLQ";
/// Subject prefix of dead letters: `shop.dlq.<consumer>.<original subject>`.
pub const DLQ_SUBJECT_PREFIX: &str = "shop.dlq";

/// The stream of one bounded context: `SHOP_<CTX>` holding `shop.<ctx>.v1.>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Stream name.
    pub name: String,
    /// Subjects captured.
    pub subjects: Vec<String>,
    /// Replicas (1 locally, 3 in a production cluster).
    pub replicas: usize,
    /// JetStream drops a second publish with the same `Nats-Msg-Id` inside this window; it
    /// must be longer than the worst outbox relay retry (a NATS outage) to deduplicate relays.
    pub duplicate_window: Duration,
    /// Messages older than this are dropped (`ZERO` keeps them forever).
    pub max_age: Duration,
}

impl StreamSpec {
    /// The stream for context `ctx` (lower case, e.g. `identity`), file storage, one replica,
    /// a 10 minute duplicate window and 7 days of retention.
    pub fn for_context(ctx: &str) -> Self {
        Self {
            name: format!("SHOP_{}", ctx.to_ascii_uppercase()),
            subjects: vec![format!("shop.{ctx}.v1.>")],
            replicas: 1,
            duplicate_window: Duration::from_secs(600),
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// The dead-letter stream, `SHOP_DLQ` on `shop.dlq.>`, kept 30 days.
    pub fn dead_letter() -> Self {
        Self {
            name: DLQ_STREAM.to_owned(),
            subjects: vec![format!("{DLQ_SUBJECT_PREFIX}.>")],
            replicas: 1,
            duplicate_window: Duration::from_secs(600),
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }

    /// Sets the replica count.
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: self.subjects.clone(),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            max_age: self.max_age,
            ..Default::default()
        }
    }

    /// Creates the stream or updates it to this spec.
    pub async fn ensure(&self, js: &jetstream::Context) -> Result<(), EventsError> {
        js.create_or_update_stream(self.config())
            .await
            .map_err(|e| provision_error(&self.name, e))?;
        Ok(())
    }
}

/// A durable pull consumer `<consumer_service>-<purpose>` on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Stream to read.
    pub stream: String,
    /// Durable name, `<consumer_service>-<purpose>`, e.g. `notifications-welcome`.
    pub durable: String,
    /// Subjects to receive; empty means every subject of the stream.
    pub filter_subjects: Vec<String>,
    /// Failed attempts before the runner dead-letters a message (counted by the runner, see
    /// [`crate::failures`]; deliveries that did not fail do not count). The server's own
    /// `max_deliver` is unlimited.
    pub max_deliver: i64,
    /// Delay before attempt `n + 1` after a transient failure of attempt `n` (the last entry
    /// repeats). Applied as a nak delay by the runner, not as the server's `backoff`: the
    /// server would replace `ack_wait` with `backoff[0]` and redeliver slow handlers early.
    pub backoff: Vec<Duration>,
    /// Time without an ack or a progress ack before a delivery is sent again (its consumer
    /// died or hung); the runner sends progress acks while a handler runs.
    pub ack_wait: Duration,
    /// Unacked messages in flight for this consumer across all replicas.
    pub max_ack_pending: i64,
    /// Replicas of the consumer state (0 = as the stream).
    pub replicas: usize,
}

impl ConsumerSpec {
    /// A consumer with 5 failed attempts, backoff 1s, 5s, 30s, ack wait 30s, 1000 in flight.
    pub fn new(stream: impl Into<String>, durable: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            durable: durable.into(),
            filter_subjects: Vec::new(),
            max_deliver: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1000,
            replicas: 0,
        }
    }

    /// Only these subjects.
    pub fn with_filter_subjects(mut self, subjects: Vec<String>) -> Self {
        self.filter_subjects = subjects;
        self
    }

    /// Sets the limit of failed attempts.
    pub fn with_max_deliver(mut self, max_deliver: i64) -> Self {
        self.max_deliver = max_deliver.max(1);
        self
    }

    /// Sets the retry schedule.
    pub fn with_backoff(mut self, backoff: Vec<Duration>) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the ack wait.
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Nak delay after a transient failure of attempt `delivered` (1-based).
    pub fn retry_delay(&self, delivered: i64) -> Duration {
        let index = usize::try_from(delivered.saturating_sub(1)).unwrap_or(0);
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    fn config(&self) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(self.durable.clone()),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            // Unlimited: were the server to stop redelivering, a message whose dead letter
            // could not be stored would be neither handled nor dead-lettered, i.e. lost. The
            // runner gives up by its own count of failures instead.
            max_deliver: -1,
            filter_subjects: self.filter_subjects.clone(),
            max_ack_pending: self.max_ack_pending,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// Creates the durable consumer or updates it to this spec (the stream must exist).
    pub async fn ensure(
        &self,
        js: &jetstream::Context,
    ) -> Result<consumer::PullConsumer, EventsError> {
        let stream = js
            .get_stream(&self.stream)
            .await
            .map_err(|e| provision_error(&self.stream, e))?;
        stream
            .create_consumer(self.config())
            .await
            .map_err(|e| provision_error(&self.durable, e))
    }
}

fn provision_error(what: &str, err: impl Into<async_nats::Error>) -> EventsError {
    EventsError::Provision {
        what: what.to_owned(),
        source: err.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_stream_follows_the_naming_convention() {
        let spec = StreamSpec::for_context("identity");
        assert_eq!(spec.name, "SHOP_IDENTITY");
        assert_eq!(spec.subjects, vec!["shop.identity.v1.>".to_owned()]);
        assert_eq!(spec.config().storage, stream::StorageType::File);
    }

    #[test]
    fn retry_delay_walks_the_schedule_and_repeats_the_last() {
        let spec = ConsumerSpec::new("S", "svc-purpose")
            .with_backoff(vec![Duration::from_millis(10), Duration::from_millis(20)]);
        assert_eq!(spec.retry_delay(1), Duration::from_millis(10));
        assert_eq!(spec.retry_delay(2), Duration::from_millis(20));
        assert_eq!(spec.retry_delay(9), Duration::from_millis(20));
        assert_eq!(spec.with_backoff(vec![]).retry_delay(1), Duration::ZERO);
    }

    #[test]
    fn server_redelivers_without_limit() {
        let spec = ConsumerSpec::new("S", "svc-purpose").with_max_deliver(3);
        assert_eq!(spec.config().max_deliver, -1);
    }
}
