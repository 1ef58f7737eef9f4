//! What a gRPC response or error means for resilience decisions.
//!
//! Classification looks at the **response headers only**: a unary call that fails is answered
//! trailers-only, so its `grpc-status` is in the headers. A status sent in trailers after a body
//! (streaming calls, or a server that fails after sending headers) is not observed; such calls
//! count as successes here. Retries only cover unary calls, and the breaker documents the same
//! limit.

use http::HeaderName;
use tonic::Code;

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

/// The `grpc-status` carried in the response headers (trailers-only response), if any.
pub fn grpc_code<B>(response: &http::Response<B>) -> Option<Code> {
    response
        .headers()
        .get(GRPC_STATUS)
        .map(|value| Code::from_bytes(value.as_bytes()))
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

/// The health outcome of a finished call; `None` for local rejections, which say nothing about
/// the dependency.
pub fn outcome<B, E>(result: &Result<http::Response<B>, E>) -> Option<Outcome> {
    match result {
        Err(_) => Some(Outcome::Failure),
        Ok(response) if Rejection::of(response).is_some() => None,
        Ok(response) => match grpc_code(response) {
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
}
