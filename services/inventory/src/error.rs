//! Inventory's errors and their one mapping to `tonic::Status`.

use std::collections::HashMap;

use shop_runtime::{db, status};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use uuid::Uuid;

use crate::domain::{ReservationStatus, Shortfall};

/// `ErrorInfo.domain` of inventory's errors.
const DOMAIN: &str = "shop.inventory.v1";

/// Everything an inventory call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A request field breaks a rule the contract cannot express (a product on two lines).
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// Lines of a reservation that stock cannot cover; nothing was reserved.
    #[error("{} line(s) short of stock", .0.len())]
    ShortOfStock(Vec<Shortfall>),
    /// Removing `-delta` units would take on hand below what is reserved and committed.
    #[error("cannot remove {} units of {product_id}: {available} available", -delta)]
    BelowHeld {
        product_id: Uuid,
        delta: i64,
        available: i64,
    },
    /// The reservation id is taken by a reservation with other lines or another order.
    #[error("reservation {0} exists with different lines or order")]
    ReservationConflict(Uuid),
    /// The idempotency key was used with a different product, delta or reason.
    #[error("idempotency key {0:?} was used for a different adjustment")]
    KeyReused(String),
    /// No reservation with that id.
    #[error("reservation {0} not found")]
    ReservationNotFound(Uuid),
    /// The reservation reached the other final state; `status` is where it is.
    #[error("reservation {id} is {}", status.as_str())]
    Finished { id: Uuid, status: ReservationStatus },
    /// A stored value the schema should have made impossible.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error")]
    Store(#[from] sqlx::Error),
    /// The event could not be written to the outbox.
    #[error("outbox")]
    Outbox(#[from] shop_outbox::OutboxError),
}

impl InventoryError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<InventoryError> for Status {
    fn from(err: InventoryError) -> Self {
        match &err {
            InventoryError::InvalidArgument { field, reason } => {
                status::invalid_argument(field, reason)
            }
            InventoryError::ShortOfStock(lines) => short_of_stock(lines),
            InventoryError::BelowHeld { .. } => {
                status::failed_precondition("delta", &err.to_string())
            }
            InventoryError::ReservationConflict(_) => {
                status::already_exists("reservation_id", &err.to_string())
            }
            InventoryError::KeyReused(_) => {
                status::already_exists("idempotency_key", &err.to_string())
            }
            InventoryError::ReservationNotFound(id) => {
                status::not_found("shop.inventory.v1.Reservation", &id.to_string())
            }
            InventoryError::Finished { id, status } => finished(*id, *status, &err.to_string()),
            InventoryError::Store(source) => db::error_status(source, "inventory"),
            InventoryError::Corrupt(_) | InventoryError::Outbox(_) => status::internal(&err),
        }
    }
}

/// FAILED_PRECONDITION naming each short line: `lines[i].quantity`, or `lines[i].product_id`
/// for a product never stocked; a `PreconditionFailure` names the products.
fn short_of_stock(lines: &[Shortfall]) -> Status {
    let mut details = ErrorDetails::new();
    let mut message = Vec::with_capacity(lines.len());
    for line in lines {
        let (field, description) = match line.available {
            None => (
                format!("lines[{}].product_id", line.index),
                format!("product {} is not stocked", line.product_id),
            ),
            Some(available) => (
                format!("lines[{}].quantity", line.index),
                format!(
                    "product {}: {} requested, {available} available",
                    line.product_id, line.requested
                ),
            ),
        };
        details.add_bad_request_violation(field.clone(), description.clone());
        details.add_precondition_failure_violation(
            "STOCK",
            line.product_id.to_string(),
            description.clone(),
        );
        message.push(format!("{field}: {description}"));
    }
    Status::with_error_details(Code::FailedPrecondition, message.join("; "), details)
}

/// FAILED_PRECONDITION for a Release of a committed or a Commit of a released reservation,
/// with the reservation's final state in an `ErrorInfo`.
fn finished(id: Uuid, status: ReservationStatus, message: &str) -> Status {
    let reason = match status {
        ReservationStatus::Committed => "RESERVATION_COMMITTED",
        ReservationStatus::Released => "RESERVATION_RELEASED",
        ReservationStatus::Reserved => "RESERVATION_RESERVED",
    };
    let metadata = HashMap::from([
        ("reservation_id".to_owned(), id.to_string()),
        (
            "status".to_owned(),
            crate::grpc::status_name(status).to_owned(),
        ),
    ]);
    let mut details = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
    details.add_bad_request_violation("reservation_id", message);
    Status::with_error_details(Code::FailedPrecondition, message, details)
}
