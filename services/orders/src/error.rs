//! Orders' errors and their one mapping to `tonic::Status`.

use shop_runtime::{db, status};
use tonic::Status;
use uuid::Uuid;

use crate::domain::{DomainError, FoldError};

/// Everything an orders call, saga step or event handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    /// A request field breaks a rule the contract's annotations cannot express.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The request is valid but the world is not as it needs (lines in several currencies).
    #[error("{field}: {reason}")]
    FailedPrecondition { field: String, reason: String },
    /// The idempotency key was first used for a different cart.
    #[error("idempotency_key {0:?} was already used for a different order")]
    KeyReused(String),
    /// No order with that id.
    #[error("order {0} not found")]
    NotFound(Uuid),
    /// The order's state refuses the command.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Another writer appended to the order first, every time we tried.
    #[error("order {0} changed concurrently; retry")]
    Contended(Uuid),
    /// A dependency (the catalog) could not answer.
    #[error("{dependency} unavailable: {detail}")]
    Unavailable {
        dependency: &'static str,
        detail: String,
    },
    /// The stored events of an order do not fold.
    #[error(transparent)]
    Corrupt(#[from] FoldError),
    /// A stored JSON document could not be read or written.
    #[error("stored document: {0}")]
    Document(#[from] serde_json::Error),
    /// The database failed.
    #[error("database error")]
    Store(#[from] sqlx::Error),
    /// The event could not be written to the outbox.
    #[error("outbox")]
    Outbox(#[from] shop_outbox::OutboxError),
    /// The inbox could not be read or written.
    #[error("inbox")]
    Inbox(#[from] shop_events::EventsError),
    /// The saga run could not be started.
    #[error("saga")]
    Saga(#[from] shop_saga::SagaError),
}

impl OrdersError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn precondition(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<OrdersError> for Status {
    fn from(err: OrdersError) -> Self {
        match &err {
            OrdersError::InvalidArgument { field, reason } => {
                status::invalid_argument(field, reason)
            }
            OrdersError::FailedPrecondition { field, reason } => {
                status::failed_precondition(field, reason)
            }
            OrdersError::KeyReused(_) => {
                status::already_exists("idempotency_key", &err.to_string())
            }
            OrdersError::NotFound(id) => status::not_found("shop.orders.v1.Order", &id.to_string()),
            OrdersError::Domain(DomainError::NotCancellable(_)) => {
                status::failed_precondition("order_id", &err.to_string())
            }
            OrdersError::Contended(_) => status::aborted("order_id", &err.to_string()),
            OrdersError::Unavailable { .. } => status::unavailable(&err.to_string()),
            OrdersError::Store(source) => db::error_status(source, "orders"),
            OrdersError::Corrupt(_)
            | OrdersError::Document(_)
            | OrdersError::Outbox(_)
            | OrdersError::Inbox(_)
            | OrdersError::Saga(_) => {
                tracing::error!(error = %status::error_chain(&err), "orders internal error");
                status::internal(&err)
            }
        }
    }
}
