//! What a gRPC response or error means for resilience decisions.
//!
//! Classification looks at the **response headers only**: a unary call that fails is answered
//! trailers-only, so its `grpc-status` is in the headers. A status sent in trailers after a body
//! (streaming calls, or a server that fails after sending headers) is not observed; such calls
//! count as successes here. Retries only cover unary calls, and the breaker documents the same
//! limit.
//!
//! `RESOURCE_EXHAUSTED` means two different things: a server out of capacity (shed load, a full
//! pool), which is the dependency being unhealthy, or *this caller* being over its quota, which
//! says nothing about the dependency. The second carries a `google.rpc.QuotaFailure` or
//! `RetryInfo` detail (our own rate limit sends both) and counts neither way.
//!
//! This module is the one place a `grpc-status` is read ([`status_code`]); the service kit's
//! metrics use it too.

use http::{HeaderMap, HeaderName};
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::Rejection;

/// The `grpc-status` header, prebuilt: it is looked up on every response.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The result of one call as far as dependency health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The dependency answered; the answer may still be an application error.
    Success,
    /// The dependency looks unhealthy (transport error or an unhealthy status code).
    Failure,
}

/// The `grpc-status` in `headers` (the headers of a trailers-only response, or trailers), if
/// any; a value that is not a known code reads as `UNKNOWN`.
pub fn status_code(headers: &HeaderMap) -> Option<Code> {
    headers
        .get(GRPC_STATUS)
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// The `grpc-status` carried in the response headers (trailers-only response), if any.
pub fn grpc_code<B>(response: &http::Response<B>) -> Option<Code> {
    status_code(response.headers())
}

/// Whether the status in `headers` is `RESOURCE_EXHAUSTED` because the caller is over its quota:
/// it carries a `google.rpc.QuotaFailure` or `RetryInfo` detail. Decodes the details only for
/// that code.
pub fn is_quota_failure(headers: &HeaderMap) -> bool {
    if status_code(headers) != Some(Code::ResourceExhausted) {
        return false;
    }
    tonic::Status::from_header_map(headers).is_some_and(|status| {
        let details = status.get_error_details();
        details.quota_failure().is_some() || details.retry_info().is_some()
    })
}

/// Whether `code` says the dependency itself is unhealthy.
///
/// `INVALID_ARGUMENT`, `NOT_FOUND` and friends are the caller's problem and never count.
pub fn is_unhealthy(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Internal
    )
}

/// The health outcome of a finished call; `None` for local rejections and for "you are over
/// your quota" answers, which say nothing about the dependency.
pub fn outcome<B, E>(result: &Result<http::Response<B>, E>) -> Option<Outcome> {
    match result {
        Err(_) => Some(Outcome::Failure),
        Ok(response) if Rejection::of(response).is_some() => None,
        Ok(response) => match grpc_code(response) {
            Some(Code::ResourceExhausted) if is_quota_failure(response.headers()) => None,
            Some(code) if is_unhealthy(code) => Some(Outcome::Failure),
            _ => Some(Outcome::Success),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_status(code: Code) -> Result<http::Response<()>, ()> {
        Ok(tonic::Status::new(code, "x").into_http())
    }

    #[test]
    fn only_unhealthy_codes_and_errors_fail() {
        assert_eq!(
            outcome(&with_status(Code::Unavailable)),
            Some(Outcome::Failure)
        );
        assert_eq!(
            outcome(&with_status(Code::Internal)),
            Some(Outcome::Failure)
        );
        assert_eq!(
            outcome(&with_status(Code::NotFound)),
            Some(Outcome::Success)
        );
        assert_eq!(
            outcome(&with_status(Code::InvalidArgument)),
            Some(Outcome::Success)
        );
        assert_eq!(
            outcome::<(), ()>(&Ok(http::Response::new(()))),
            Some(Outcome::Success)
        );
        assert_eq!(outcome::<(), ()>(&Err(())), Some(Outcome::Failure));
        let rejected: Result<http::Response<()>, ()> = Ok(Rejection::CircuitOpen.into_response());
        assert_eq!(outcome(&rejected), None);
    }

    #[test]
    fn over_quota_is_neutral_but_plain_exhaustion_fails() {
        use tonic_types::{ErrorDetails, QuotaViolation};

        let plain = with_status(Code::ResourceExhausted);
        assert_eq!(outcome(&plain), Some(Outcome::Failure));

        let quota = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "over quota",
            ErrorDetails::with_quota_failure(vec![QuotaViolation::new("caller", "too many")]),
        );
        let quota: Result<http::Response<()>, ()> = Ok(quota.into_http());
        assert_eq!(outcome(&quota), None);

        let retry_later = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(std::time::Duration::from_millis(5))),
        );
        let retry_later: Result<http::Response<()>, ()> = Ok(retry_later.into_http());
        assert_eq!(outcome(&retry_later), None);

        // A detail on another code changes nothing.
        let unavailable = tonic::Status::with_error_details(
            Code::Unavailable,
            "down",
            ErrorDetails::with_retry_info(Some(std::time::Duration::from_millis(5))),
        );
        let unavailable: Result<http::Response<()>, ()> = Ok(unavailable.into_http());
        assert_eq!(outcome(&unavailable), Some(Outcome::Failure));
    }
}
