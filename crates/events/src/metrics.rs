//! Counters and gauges of durable consumers for a service's `/metrics`. The crate picks no
//! registry (it does not depend on the service kit): a service registers them in its own,
//! `builder.metrics().with_registry(|r| consumer_metrics.register(r))`, and hands them to
//! [`ConsumerRunner::with_metrics`](crate::ConsumerRunner::with_metrics). With the kit's
//! `shop` prefix:
//!
//! - `shop_events_handled_total{consumer,outcome}`: deliveries settled, by how: `ack`
//!   (handled, a duplicate, or an unknown type), `retry` (negatively acknowledged for a later
//!   redelivery), `dead_letter` (moved to `SHOP_DLQ` and terminated);
//! - `shop_events_redeliveries_total{consumer}`: deliveries that were not the message's first;
//! - `shop_events_dead_lettered_total{consumer}`: messages given up on;
//! - `shop_events_consumer_pending{consumer}` (gauge): messages in the stream the consumer has
//!   not been delivered yet, from JetStream's consumer info, refreshed as the runner pulls (every
//!   replica of a service reports the same count).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of one consumer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    /// The durable consumer's name.
    pub consumer: String,
}

/// Labels of one consumer's settled deliveries.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The durable consumer's name.
    pub consumer: String,
    /// `ack`, `retry` or `dead_letter`.
    pub outcome: String,
}

/// The consumers' metrics. Cheap to clone; clones share values (one set serves every consumer
/// of a service).
#[derive(Debug, Clone, Default)]
pub struct ConsumerMetrics {
    handled: Family<OutcomeLabels, Counter>,
    redeliveries: Family<ConsumerLabels, Counter>,
    dead_lettered: Family<ConsumerLabels, Counter>,
    pending: Family<ConsumerLabels, Gauge>,
}

impl ConsumerMetrics {
    /// Registers the four metrics (the registry adds its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "events_handled",
            "Event deliveries settled, by consumer and outcome (ack, retry, dead_letter)",
            self.handled.clone(),
        );
        registry.register(
            "events_redeliveries",
            "Event deliveries that were not the message's first",
            self.redeliveries.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Events given up on and moved to SHOP_DLQ",
            self.dead_lettered.clone(),
        );
        registry.register(
            "events_consumer_pending",
            "Messages not yet delivered to the consumer (JetStream consumer info)",
            self.pending.clone(),
        );
    }

    fn consumer(consumer: &str) -> ConsumerLabels {
        ConsumerLabels {
            consumer: consumer.to_owned(),
        }
    }

    pub(crate) fn settled(&self, consumer: &str, outcome: &str) {
        self.handled
            .get_or_create(&OutcomeLabels {
                consumer: consumer.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub(crate) fn redelivered(&self, consumer: &str) {
        self.redeliveries
            .get_or_create(&Self::consumer(consumer))
            .inc();
    }

    pub(crate) fn dead_lettered(&self, consumer: &str) {
        self.dead_lettered
            .get_or_create(&Self::consumer(consumer))
            .inc();
    }

    pub(crate) fn set_pending(&self, consumer: &str, pending: u64) {
        self.pending
            .get_or_create(&Self::consumer(consumer))
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Deliveries of `consumer` settled with `outcome` so far (tests, status pages).
    pub fn handled(&self, consumer: &str, outcome: &str) -> u64 {
        self.handled
            .get_or_create(&OutcomeLabels {
                consumer: consumer.to_owned(),
                outcome: outcome.to_owned(),
            })
            .get()
    }

    /// Redeliveries to `consumer` so far.
    pub fn redeliveries(&self, consumer: &str) -> u64 {
        self.redeliveries
            .get_or_create(&Self::consumer(consumer))
            .get()
    }

    /// Messages `consumer` gave up on so far.
    pub fn dead_letters(&self, consumer: &str) -> u64 {
        self.dead_lettered
            .get_or_create(&Self::consumer(consumer))
            .get()
    }

    /// Undelivered messages at the last refresh.
    pub fn pending(&self, consumer: &str) -> i64 {
        self.pending.get_or_create(&Self::consumer(consumer)).get()
    }
}
