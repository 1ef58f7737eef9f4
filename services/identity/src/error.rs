//! Identity's errors and their one mapping to `tonic::Status`.

use shop_runtime::{db, status};
use tonic::Status;

/// Everything an identity call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A request field breaks a rule the contract cannot express.
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// An account with that email exists.
    #[error("email is already registered")]
    EmailTaken,
    /// Unknown email or wrong password: deliberately not told apart.
    #[error("email or password is wrong")]
    BadCredentials,
    /// Too many failed logins for the account or from the peer.
    #[error("too many failed logins; try again later")]
    TooManyFailures { retry_after: std::time::Duration },
    /// Every hashing slot stayed taken for the whole wait.
    #[error("too many password checks at once; try again shortly")]
    HashingBusy { retry_after: std::time::Duration },
    /// No user with that id.
    #[error("user {0} not found")]
    NotFound(String),
    /// Hashing or signing failed.
    #[error("credential processing failed: {0}")]
    Crypto(String),
    /// The database failed.
    #[error("database error")]
    Store(#[from] sqlx::Error),
    /// The event could not be written to the outbox.
    #[error("outbox")]
    Outbox(#[from] shop_outbox::OutboxError),
}

impl From<IdentityError> for Status {
    fn from(err: IdentityError) -> Self {
        match &err {
            IdentityError::InvalidArgument { field, reason } => {
                status::invalid_argument(field, reason)
            }
            IdentityError::EmailTaken => status::already_exists("email", &err.to_string()),
            IdentityError::BadCredentials => status::unauthenticated(&err.to_string()),
            IdentityError::TooManyFailures { retry_after }
            | IdentityError::HashingBusy { retry_after } => {
                status::resource_exhausted(&err.to_string(), *retry_after)
            }
            IdentityError::NotFound(id) => status::not_found("shop.identity.v1.User", id),
            IdentityError::Store(source) => db::error_status(source, "identity"),
            IdentityError::Crypto(_) | IdentityError::Outbox(_) => status::internal(&err),
        }
    }
}
