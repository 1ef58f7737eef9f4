//! Building `tonic::Status` values with `google.rpc` details, for each service's one
//! `impl From<ServiceError> for Status`.
//!
//! Client errors name the field at fault in a `BadRequest` detail, so a client (or the REST
//! gateway) can point at it. Internal errors log their cause chain and return an opaque message.

use std::error::Error as StdError;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `INVALID_ARGUMENT` naming `field` in a `BadRequest` field violation.
#[must_use]
pub fn invalid_argument(field: &str, description: &str) -> Status {
    with_field(Code::InvalidArgument, field, description)
}

/// `ALREADY_EXISTS` naming the field whose value is taken.
#[must_use]
pub fn already_exists(field: &str, description: &str) -> Status {
    with_field(Code::AlreadyExists, field, description)
}

/// `FAILED_PRECONDITION` naming the field whose value no longer holds (e.g. a stale version).
#[must_use]
pub fn failed_precondition(field: &str, description: &str) -> Status {
    with_field(Code::FailedPrecondition, field, description)
}

/// `ABORTED` naming the field whose value lost a concurrency race (e.g. an expected version
/// that moved on): the caller should re-read and retry.
#[must_use]
pub fn aborted(field: &str, description: &str) -> Status {
    with_field(Code::Aborted, field, description)
}

/// `RESOURCE_EXHAUSTED` with a `RetryInfo` detail saying when trying again makes sense.
#[must_use]
pub fn resource_exhausted(message: &str, retry_after: std::time::Duration) -> Status {
    let details = ErrorDetails::with_retry_info(Some(retry_after));
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

/// `NOT_FOUND` with a `ResourceInfo` detail.
#[must_use]
pub fn not_found(resource_type: &str, resource_name: &str) -> Status {
    let details = ErrorDetails::with_resource_info(resource_type, resource_name, "", "not found");
    Status::with_error_details(
        Code::NotFound,
        format!("{resource_type} {resource_name} not found"),
        details,
    )
}

/// `UNAUTHENTICATED` with a message that does not say which credential was wrong.
#[must_use]
pub fn unauthenticated(message: &str) -> Status {
    Status::unauthenticated(message)
}

/// `UNAVAILABLE`: the caller may retry later (a dependency is down).
#[must_use]
pub fn unavailable(message: &str) -> Status {
    Status::unavailable(message)
}

/// `INTERNAL` with an opaque message; the full cause chain goes to the log only.
#[must_use]
pub fn internal(error: &(dyn StdError + 'static)) -> Status {
    tracing::error!(error = %error_chain(error), "internal error");
    Status::internal("internal error")
}

/// `error` and its sources joined with `: `.
#[must_use]
pub fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn with_field(code: Code, field: &str, description: &str) -> Status {
    let details = ErrorDetails::with_bad_request_violation(field, description);
    Status::with_error_details(code, format!("{field}: {description}"), details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field() {
        let status = invalid_argument("page_token", "malformed");
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = details
            .bad_request()
            .expect("bad request detail")
            .field_violations
            .clone();
        assert_eq!(violations[0].field, "page_token");
    }

    #[test]
    fn internal_is_opaque() {
        let err = std::io::Error::other("disk on fire at /secret/path");
        let status = internal(&err);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
