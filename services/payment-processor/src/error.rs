//! The processor's one mapping from [`SimError`] to `tonic::Status`.

use shop_runtime::status;
use tonic::Status;

use crate::sim::SimError;

impl From<SimError> for Status {
    fn from(err: SimError) -> Self {
        match &err {
            SimError::Unavailable => status::unavailable("payment processor unavailable"),
            SimError::UnknownCharge(reference) => {
                status::not_found("shop.processor.v1.Charge", reference)
            }
            SimError::KeyReused => status::invalid_argument("idempotency_key", &err.to_string()),
            SimError::Refused(reason) => status::failed_precondition("amount", reason),
        }
    }
}
