//! The catalog's errors and their one mapping to `tonic::Status`.

use shop_runtime::{db, status};
use tonic::Status;

/// Everything a catalog call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A request field breaks a rule the contract cannot express (e.g. a page token).
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// No product with that id.
    #[error("product {0} not found")]
    NotFound(String),
    /// Another product has that SKU.
    #[error("sku {0:?} already exists")]
    SkuTaken(String),
    /// The idempotency key was first used with a different request.
    #[error("idempotency key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    /// The product changed since the caller read it.
    #[error("product is at version {actual}, not {expected}")]
    VersionMismatch { expected: i64, actual: i64 },
    /// The database failed.
    #[error("database error")]
    Store(#[from] sqlx::Error),
    /// The event could not be written to the outbox.
    #[error("outbox")]
    Outbox(#[from] shop_outbox::OutboxError),
}

impl CatalogError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

impl From<CatalogError> for Status {
    fn from(err: CatalogError) -> Self {
        match &err {
            CatalogError::InvalidArgument { field, reason } => {
                status::invalid_argument(field, reason)
            }
            CatalogError::NotFound(id) => status::not_found("shop.catalog.v1.Product", id),
            CatalogError::SkuTaken(_) => status::already_exists("sku", &err.to_string()),
            CatalogError::IdempotencyKeyReused(_) => {
                status::failed_precondition("idempotency_key", &err.to_string())
            }
            CatalogError::VersionMismatch { .. } => {
                status::aborted("expected_version", &err.to_string())
            }
            CatalogError::Store(source) => db::error_status(source, "catalog"),
            CatalogError::Outbox(_) => status::internal(&err),
        }
    }
}
