use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, QuotaViolation, StatusExt as _};

/// A call that a resilience layer refused or cut short locally, without an answer from the peer.
///
/// Rejections become trailers-only gRPC responses (see [`Rejection::into_response`]); the
/// rejection itself rides along as a response extension so outer layers (retry, breaker) can
/// ignore calls that never reached the dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The circuit breaker is open (or half-open with all probe slots taken).
    #[error("circuit breaker open")]
    CircuitOpen,
    /// The bulkhead's concurrency limit and wait queue are both full.
    #[error("bulkhead full")]
    BulkheadFull,
    /// The call waited in the bulkhead queue longer than the queue timeout.
    #[error("bulkhead queue timeout")]
    QueueTimeout,
    /// The call's deadline passed before an answer arrived.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The server is at its concurrency limit and shed the call.
    #[error("server overloaded")]
    Overloaded,
    /// The caller exceeded its rate limit; it may call again after `retry_after`.
    ///
    /// Answered with `google.rpc.QuotaFailure` and `RetryInfo` details, so the caller can tell
    /// "you are over your quota" from an overloaded or failing server (see
    /// [`crate::classify::is_quota_failure`]).
    #[error("rate limited")]
    RateLimited {
        /// When the caller's next call would be admitted.
        retry_after: Duration,
    },
}

// === impl Rejection ===

impl Rejection {
    /// The gRPC code a client sees for this rejection.
    pub fn code(self) -> Code {
        match self {
            Self::CircuitOpen => Code::Unavailable,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::BulkheadFull
            | Self::QueueTimeout
            | Self::Overloaded
            | Self::RateLimited { .. } => Code::ResourceExhausted,
        }
    }

    /// This rejection as a `tonic::Status`.
    pub fn to_status(self) -> Status {
        match self {
            Self::RateLimited { retry_after } => {
                let mut details = ErrorDetails::with_retry_info(Some(retry_after));
                details.set_quota_failure(vec![QuotaViolation::new(
                    "caller",
                    "over the per-caller rate limit of this server",
                )]);
                Status::with_error_details(self.code(), self.to_string(), details)
            }
            _ => Status::new(self.code(), self.to_string()),
        }
    }

    /// A trailers-only gRPC response carrying this rejection as an extension.
    pub fn into_response<B: Default>(self) -> http::Response<B> {
        let mut response = self.to_status().into_http::<B>();
        response.extensions_mut().insert(self);
        response
    }

    /// The rejection carried by `response`, if a resilience layer produced it.
    pub fn of<B>(response: &http::Response<B>) -> Option<Self> {
        response.extensions().get::<Self>().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::grpc_code;

    #[test]
    fn into_response_is_trailers_only_with_code() {
        let response: http::Response<tonic::body::Body> = Rejection::Overloaded.into_response();
        assert_eq!(grpc_code(&response), Some(Code::ResourceExhausted));
        assert_eq!(Rejection::of(&response), Some(Rejection::Overloaded));
    }

    #[test]
    fn rate_limited_says_quota_and_when_to_retry() {
        let retry_after = Duration::from_millis(250);
        let status = Rejection::RateLimited { retry_after }.to_status();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().and_then(|info| info.retry_delay),
            Some(retry_after)
        );
        assert!(details.quota_failure().is_some());
        assert!(Rejection::Overloaded.to_status().details().is_empty());
    }
}

pin_project_lite::pin_project! {
    /// A response future that is either a local rejection or the inner service's future.
    #[project = RejectOrProj]
    pub enum RejectOr<F> {
        /// Answered locally.
        Rejected { rejection: Rejection },
        /// Passed to the inner service.
        Inner { #[pin] future: F },
    }
}

// === impl RejectOr ===

impl<F, RB, E> std::future::Future for RejectOr<F>
where
    F: std::future::Future<Output = Result<http::Response<RB>, E>>,
    RB: Default,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            RejectOrProj::Rejected { rejection } => {
                std::task::Poll::Ready(Ok(rejection.into_response()))
            }
            RejectOrProj::Inner { future } => future.poll(cx),
        }
    }
}
