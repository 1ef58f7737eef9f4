//! The outbox's error type.

use shop_events::EventsError;

/// Errors from writing, relaying and maintaining the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// A database call failed.
    #[error("outbox database: {0}")]
    Database(#[from] sqlx::Error),
    /// The event could not be encoded.
    #[error(transparent)]
    Events(#[from] EventsError),
    /// Headers stored as JSON could not be written or read.
    #[error("outbox headers: {0}")]
    Headers(#[from] serde_json::Error),
    /// The NATS client is not connected; nothing was claimed.
    #[error("NATS is not connected")]
    NatsDisconnected,
    /// Part of a batch was not acknowledged; the acked part was marked published.
    #[error("relay published {published} of a batch, then: {source}")]
    Relay {
        /// Rows published and marked.
        published: usize,
        /// The first publish error.
        #[source]
        source: EventsError,
    },
}
