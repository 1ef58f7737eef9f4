//! Retries for idempotent unary calls: tower's [`tower::retry::Retry`] driven by a policy with a
//! [`TpsBudget`], exponential backoff with full jitter and a cap, a maximum number of attempts,
//! retryable codes only, and never past the call's [`Deadline`].
//!
//! Only paths listed in [`RetryConfig::idempotent_methods`] are retried (exact
//! `/pkg.Service/Method`, or `/pkg.Service/*` for every method of a service); their request body
//! is buffered so it can be replayed. Such methods must be unary. Bodies larger than
//! `max_body_bytes` are sent once, without retries. Every call (retried or not) deposits into the
//! budget; every retry withdraws, so under a sustained outage retries stay near
//! `budget_percent` of calls plus the `budget_min_per_sec` reserve. Local rejections (breaker
//! open, bulkhead full) are never retried.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tonic::Code;
use tonic::body::Body;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service, ServiceExt};

use crate::Rejection;
use crate::classify::grpc_code;
use crate::deadline::{self, Deadline, GRPC_TIMEOUT};

/// Retry behaviour for one dependency.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts in total, the first one included (1 disables retries).
    pub max_attempts: u32,
    /// Backoff before the first retry, doubled per retry.
    pub base_backoff: Duration,
    /// Upper bound of the backoff before jitter.
    pub max_backoff: Duration,
    /// Status codes worth retrying (transport errors always are).
    pub retryable_codes: Vec<Code>,
    /// gRPC paths safe to retry: `/pkg.Service/Method` or `/pkg.Service/*`.
    pub idempotent_methods: HashSet<String>,
    /// Largest request body buffered for replay.
    pub max_body_bytes: usize,
    /// How long deposits stay in the budget (clamped to 1..=60 s).
    pub budget_ttl: Duration,
    /// Retries per second always allowed.
    pub budget_min_per_sec: u32,
    /// Retries allowed per call, as a fraction (0.2 = one retry per five calls).
    pub budget_percent: f32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(500),
            retryable_codes: vec![Code::Unavailable],
            idempotent_methods: HashSet::new(),
            max_body_bytes: 64 * 1024,
            budget_ttl: Duration::from_secs(10),
            budget_min_per_sec: 10,
            budget_percent: 0.2,
        }
    }
}

#[derive(Debug)]
struct Shared {
    config: RetryConfig,
    budget: TpsBudget,
}

/// Builds [`Retry`] services sharing one retry budget.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

/// A service whose idempotent calls are retried.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Response future of [`Retry`].
pub type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

/// Sends one attempt: turns the buffered request back into a streaming body and refreshes
/// `grpc-timeout` to the time left.
#[derive(Debug, Clone)]
struct Attempt<S>(S);

/// Marks a request copy kept for a retry: its `grpc-timeout` must be refreshed when sent. The
/// first attempt goes out with the one [`ClientDeadline`](crate::deadline::ClientDeadline) just
/// stamped.
#[derive(Debug, Clone, Copy)]
struct Retried;

/// A buffered request body sent again. Unlike `Full` it does not claim an exact size, so hyper
/// adds no `content-length` header: the attempt goes out like a streamed tonic body does.
#[derive(Debug)]
struct Replay(Option<Bytes>);

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Per-call retry state; tower clones the policy for every call.
#[derive(Debug, Clone)]
struct Policy {
    shared: Arc<Shared>,
    attempts: u32,
    deadline: Option<Deadline>,
}

// === impl RetryConfig ===

impl RetryConfig {
    /// Whether `path` is declared idempotent.
    pub fn is_idempotent(&self, path: &str) -> bool {
        if self.idempotent_methods.contains(path) {
            return true;
        }
        // `/pkg.Service/*`, built on the stack: this runs on every call.
        let mut buf = [0u8; 256];
        path.rfind('/').is_some_and(|slash| {
            let prefix = &path.as_bytes()[..=slash];
            let Some(wildcard) = buf.get_mut(..=prefix.len()) else {
                return self
                    .idempotent_methods
                    .contains(&format!("{}*", &path[..=slash]));
            };
            let (head, star) = wildcard.split_at_mut(prefix.len());
            head.copy_from_slice(prefix);
            star[0] = b'*';
            std::str::from_utf8(wildcard).is_ok_and(|w| self.idempotent_methods.contains(w))
        })
    }

    /// Full-jitter backoff before retry number `retry` (1-based).
    fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(
                1u32.checked_shl(retry.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(self.max_backoff);
        let nanos = u64::try_from(exp.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }

    fn budget(&self) -> TpsBudget {
        let ttl = self
            .budget_ttl
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let percent = self.budget_percent.clamp(0.0, 1000.0);
        let min_per_sec = self.budget_min_per_sec.min(i32::MAX as u32 - 1);
        TpsBudget::new(ttl, min_per_sec, percent)
    }
}

// === impl RetryLayer ===

impl RetryLayer {
    /// Retries per `config`, with a fresh budget.
    pub fn new(config: RetryConfig) -> Self {
        let budget = config.budget();
        Self {
            shared: Arc::new(Shared { config, budget }),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            shared: self.shared.clone(),
        }
    }
}

// === impl Retry ===

impl<S> Service<http::Request<Body>> for Retry<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        shared.budget.deposit();
        let config = &shared.config;
        if config.max_attempts <= 1 || !config.is_idempotent(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        // `inner` was driven to readiness by `poll_ready`; tower's Retry drives clones itself.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(status) => return Ok(status.into_http()),
            };
            let req = http::Request::from_parts(parts, bytes);
            if req.body().len() > shared.config.max_body_bytes {
                return Attempt(inner).oneshot(req).await;
            }
            let policy = Policy {
                deadline: req.extensions().get::<Deadline>().copied(),
                shared,
                attempts: 0,
            };
            tower::retry::Retry::new(policy, Attempt(inner))
                .oneshot(req)
                .await
        })
    }
}

// === impl Attempt ===

impl<S> Service<http::Request<Bytes>> for Attempt<S>
where
    S: Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Bytes>) -> Self::Future {
        let (mut parts, bytes) = req.into_parts();
        let retried = parts.extensions.remove::<Retried>().is_some();
        let deadline = parts.extensions.get::<Deadline>().copied();
        if let Some(deadline) =
            deadline.filter(|_| retried || !parts.headers.contains_key(GRPC_TIMEOUT))
        {
            deadline::stamp(&mut parts.headers, deadline);
        }
        self.0.call(http::Request::from_parts(
            parts,
            Body::new(Replay(Some(bytes))),
        ))
    }
}

// === impl Policy ===

impl Policy {
    fn is_retryable<E>(&self, result: &Result<http::Response<Body>, E>) -> bool {
        match result {
            Err(_) => true,
            Ok(response) if Rejection::of(response).is_some() => false,
            Ok(response) => grpc_code(response)
                .is_some_and(|code| self.shared.config.retryable_codes.contains(&code)),
        }
    }
}

impl<E> tower::retry::Policy<http::Request<Bytes>, http::Response<Body>, E> for Policy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut http::Request<Bytes>,
        result: &mut Result<http::Response<Body>, E>,
    ) -> Option<Self::Future> {
        self.attempts += 1;
        let config = &self.shared.config;
        if !self.is_retryable(result) || self.attempts >= config.max_attempts {
            return None;
        }
        let backoff = config.backoff(self.attempts);
        if self.deadline.is_some_and(|d| d.remaining() <= backoff) {
            tracing::debug!(path = req.uri().path(), "not retrying: deadline too close");
            return None;
        }
        if !self.shared.budget.withdraw() {
            tracing::debug!(
                path = req.uri().path(),
                "not retrying: retry budget exhausted"
            );
            return None;
        }
        tracing::debug!(
            path = req.uri().path(),
            attempt = self.attempts + 1,
            ?backoff,
            "retrying"
        );
        Some(tokio::time::sleep(backoff))
    }

    fn clone_request(&mut self, req: &http::Request<Bytes>) -> Option<http::Request<Bytes>> {
        let mut clone = http::Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        clone.extensions_mut().insert(Retried);
        Some(clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_paths_exact_and_wildcard() {
        let config = RetryConfig {
            idempotent_methods: ["/a.S/Get".to_owned(), "/b.T/*".to_owned()].into(),
            ..RetryConfig::default()
        };
        assert!(config.is_idempotent("/a.S/Get"));
        assert!(!config.is_idempotent("/a.S/Put"));
        assert!(config.is_idempotent("/b.T/Anything"));
        assert!(!config.is_idempotent("/c.U/Anything"));
        let long = format!("/{}/*", "x".repeat(300));
        let config = RetryConfig {
            idempotent_methods: [long.clone()].into(),
            ..RetryConfig::default()
        };
        assert!(config.is_idempotent(&long.replace('*', "Get")));
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        let config = RetryConfig::default();
        for retry in 1..40 {
            let exp = config.base_backoff.saturating_mul(1 << retry.min(20));
            assert!(config.backoff(retry) <= exp.min(config.max_backoff));
        }
    }
}
