//! Events over NATS JetStream: what every service uses to publish and consume domain events.
//!
//! Owns stream and consumer provisioning, the typed protobuf envelope (metadata in headers,
//! `Nats-Msg-Id` = event id for deduplication), the publisher, the consumer runner with
//! ack/nak/backoff and a dead-letter stream, and the Postgres inbox that makes consumers
//! idempotent. Services publish through `shop-outbox`, not directly, when the event must
//! commit with a database change.
//!
//! # Layout
//!
//! - [`envelope`] has [`EventEnvelope`], [`EncodedEvent`], [`EventMeta`] and header names.
//! - [`provision`] has [`StreamSpec`] (`SHOP_<CTX>`, `SHOP_DLQ`) and [`ConsumerSpec`].
//! - [`publisher`] has [`EventPublisher`].
//! - [`handlers`] and [`runner`] have [`Handlers`] per event type and the [`ConsumerRunner`].
//! - [`failures`] counts failed attempts per message in a key-value bucket (dead-lettering).
//! - [`inbox`] has [`Inbox`] and its migration.
//! - [`NatsReadiness`] makes NATS a readiness dependency of a service.
//!
//! Event types are any `prost::Message + prost::Name`; the full protobuf name is the type key.

mod dead_letter;
pub mod envelope;
mod error;
pub mod failures;
pub mod handlers;
pub mod inbox;
pub mod metrics;
pub mod provision;
pub mod publisher;
mod readiness;
pub mod runner;

pub use envelope::{EncodedEvent, EventEnvelope, EventMeta, subject_for};
pub use error::{EventsError, HandlerError};
pub use handlers::{Delivery, Handlers};
pub use inbox::Inbox;
pub use metrics::ConsumerMetrics;
pub use provision::{ConsumerSpec, StreamSpec};
pub use publisher::{EventPublisher, Published};
pub use readiness::NatsReadiness;
pub use runner::{ConsumerRunner, UnknownEvents};

/// Connects to NATS (retrying the first connection, reconnecting forever after) and returns
/// a JetStream context. `name` shows up in the server's connection list.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::jetstream::Context, EventsError> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connect(url)
        .await
        .map_err(|e| EventsError::Provision {
            what: format!("connection to {url}"),
            source: e.into(),
        })?;
    Ok(async_nats::jetstream::new(client))
}
