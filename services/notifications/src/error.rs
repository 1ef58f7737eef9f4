//! The notifications service's errors and their one mapping to `tonic::Status`.

use shop_runtime::{db, status};
use tonic::Status;

/// Everything a notifications call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum NotificationsError {
    /// A request field breaks a rule the contract cannot express.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// The database failed.
    #[error("database error")]
    Store(#[from] sqlx::Error),
}

impl From<NotificationsError> for Status {
    fn from(err: NotificationsError) -> Self {
        match &err {
            NotificationsError::InvalidArgument { field, reason } => {
                status::invalid_argument(field, reason)
            }
            NotificationsError::Store(source) => db::error_status(source, "notifications"),
        }
    }
}
