//! Shipping's errors and their one mapping to `tonic::Status`.

use std::collections::HashMap;

use shop_runtime::{db, status};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use uuid::Uuid;

use crate::domain::ShipmentStatus;

/// `ErrorInfo.domain` of shipping's errors.
const DOMAIN: &str = "shop.shipping.v1";

/// Everything a shipping call or event handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ShippingError {
    /// A request field breaks a rule the contract's annotations cannot express.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// No shipment with that id.
    #[error("shipment {0} not found")]
    NotFound(Uuid),
    /// No shipment for that order (not confirmed yet, or never).
    #[error("no shipment for order {0}")]
    NoShipmentForOrder(Uuid),
    /// The shipment was picked up or delivered: too late to cancel.
    #[error("shipment {id} is {} and can no longer be cancelled", status.name())]
    NotCancellable { id: Uuid, status: ShipmentStatus },
    /// A stored value the schema should have made impossible.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error")]
    Store(#[from] sqlx::Error),
    /// The event could not be written to the outbox.
    #[error("outbox")]
    Outbox(#[from] shop_outbox::OutboxError),
    /// The inbox could not be read or written.
    #[error("inbox")]
    Inbox(#[from] shop_events::EventsError),
}

impl ShippingError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<ShippingError> for Status {
    fn from(err: ShippingError) -> Self {
        match &err {
            ShippingError::InvalidArgument { field, reason } => {
                status::invalid_argument(field, reason)
            }
            ShippingError::NotFound(id) => {
                status::not_found("shop.shipping.v1.Shipment", &id.to_string())
            }
            ShippingError::NoShipmentForOrder(order) => {
                status::not_found("shop.shipping.v1.Shipment", &format!("order_id={order}"))
            }
            ShippingError::NotCancellable { id, status } => {
                not_cancellable(*id, *status, &err.to_string())
            }
            ShippingError::Store(source) => db::error_status(source, "shipping"),
            ShippingError::Corrupt(_) | ShippingError::Outbox(_) | ShippingError::Inbox(_) => {
                status::internal(&err)
            }
        }
    }
}

/// FAILED_PRECONDITION on `shipment_id`, with the shipment's state in an `ErrorInfo`
/// (reason `SHIPMENT_IN_TRANSIT` or `SHIPMENT_DELIVERED`, metadata `status`).
fn not_cancellable(id: Uuid, status: ShipmentStatus, message: &str) -> Status {
    let reason = format!("SHIPMENT_{}", status.name());
    let metadata = HashMap::from([
        ("shipment_id".to_owned(), id.to_string()),
        ("status".to_owned(), status.name().to_owned()),
    ]);
    let mut details = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
    details.add_bad_request_violation("shipment_id", message);
    details.add_precondition_failure_violation("STATUS", id.to_string(), message);
    Status::with_error_details(Code::FailedPrecondition, message, details)
}
