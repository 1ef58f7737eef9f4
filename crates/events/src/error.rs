//! Error types: one for the crate's plumbing, one that handlers return.

use std::fmt;

/// Errors from provisioning, publishing, consuming and the inbox.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The envelope could not be built or read (bad or missing headers).
    #[error("event envelope: {0}")]
    Envelope(String),
    /// A stream or consumer could not be created or updated.
    #[error("provisioning {what}: {source}")]
    Provision {
        /// Stream or consumer name.
        what: String,
        /// The JetStream error.
        #[source]
        source: async_nats::Error,
    },
    /// Publishing failed or JetStream did not acknowledge in time.
    #[error("publish to {subject}: {source}")]
    Publish {
        /// Subject published to.
        subject: String,
        /// The JetStream error.
        #[source]
        source: async_nats::Error,
    },
    /// Pulling messages from a consumer failed.
    #[error("consume from {consumer}: {source}")]
    Consume {
        /// Durable consumer name.
        consumer: String,
        /// The JetStream error.
        #[source]
        source: async_nats::Error,
    },
    /// The inbox table could not be read or written.
    #[error("inbox: {0}")]
    Inbox(#[from] sqlx::Error),
}

/// What a handler reports when it could not apply an event. The runner acks only on `Ok`.
#[derive(Debug)]
pub enum HandlerError {
    /// Worth retrying (database or network hiccup): nak with backoff, dead-letter after
    /// `max_deliver` failed attempts.
    Transient(Box<dyn std::error::Error + Send + Sync>),
    /// Retrying cannot help (invalid content, violated invariant): dead-letter at once.
    Permanent(Box<dyn std::error::Error + Send + Sync>),
}

impl HandlerError {
    /// A transient error from anything displayable.
    pub fn transient(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Transient(err.into())
    }

    /// A permanent error from anything displayable.
    pub fn permanent(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Permanent(err.into())
    }

    /// Whether the runner should retry.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transient(e) => write!(f, "transient: {e}"),
            Self::Permanent(e) => write!(f, "permanent: {e}"),
        }
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Transient(e) | Self::Permanent(e) => Some(e.as_ref()),
        }
    }
}

/// Database errors are transient by default: the transaction rolled back, a retry may succeed.
impl From<sqlx::Error> for HandlerError {
    fn from(err: sqlx::Error) -> Self {
        Self::Transient(Box::new(err))
    }
}

impl From<EventsError> for HandlerError {
    fn from(err: EventsError) -> Self {
        match err {
            EventsError::Envelope(_) => Self::Permanent(Box::new(err)),
            _ => Self::Transient(Box::new(err)),
        }
    }
}
