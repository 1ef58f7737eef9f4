//! Payments' errors and their one mapping to `tonic::Status`.

use shop_runtime::{db, status};
use tonic::Status;

use crate::domain::RuleError;
use crate::processor::ProcessorError;

/// Everything a payments call can fail with. A declined card is not here: it is a payment in
/// status DECLINED.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    /// A field breaks a rule the contract cannot express, or the payment's state.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// The idempotency key was first used for another request.
    #[error("idempotency_key {0:?} was already used for a different request")]
    KeyReused(String),
    /// Another operation on this payment has an outcome not known yet.
    #[error("payment {0} has another operation in progress; retry that one with its key")]
    InProgress(String),
    /// No payment with that id.
    #[error("payment {0} not found")]
    NotFound(String),
    /// The processor could not be reached, or its answer was lost; retry with the same key.
    #[error("payment processor unavailable")]
    Unavailable(#[source] ProcessorError),
    /// The processor refused an operation payments thought valid.
    #[error("payment processor refused the operation")]
    Refused(#[source] ProcessorError),
    /// A stored answer could not be read back.
    #[error("stored result of idempotency key {0:?} is unreadable")]
    CorruptResult(String),
    /// The database failed.
    #[error("database error")]
    Store(#[from] sqlx::Error),
    /// The event could not be written to the outbox.
    #[error("outbox")]
    Outbox(#[from] shop_outbox::OutboxError),
}

impl From<PaymentsError> for Status {
    fn from(err: PaymentsError) -> Self {
        match &err {
            PaymentsError::Rule(RuleError::Invalid { field, reason }) => {
                status::invalid_argument(field, reason)
            }
            PaymentsError::Rule(RuleError::Precondition { field, reason }) => {
                status::failed_precondition(field, reason)
            }
            PaymentsError::KeyReused(_) => {
                status::invalid_argument("idempotency_key", &err.to_string())
            }
            PaymentsError::InProgress(_) | PaymentsError::Refused(_) => {
                status::failed_precondition("payment_id", &status::error_chain(&err))
            }
            PaymentsError::NotFound(id) => status::not_found("shop.payments.v1.Payment", id),
            PaymentsError::Unavailable(_) => {
                tracing::warn!(error = %status::error_chain(&err), "processor unavailable");
                status::unavailable("payment processor unavailable; retry with the same key")
            }
            PaymentsError::Store(source) => db::error_status(source, "payments"),
            PaymentsError::CorruptResult(_) | PaymentsError::Outbox(_) => status::internal(&err),
        }
    }
}
