//! Retries for idempotent unary calls: tower's [`TpsBudget`], exponential backoff with full
//! jitter and a cap, a maximum number of attempts, retryable codes only, and never past the
//! call's [`Deadline`].
//!
//! Only paths listed in [`RetryConfig::idempotent_methods`] are retried (exact
//! `/pkg.Service/Method`, or `/pkg.Service/*` for every method of a service); their request body
//! is buffered so it can be replayed. Such methods must be unary. Bodies larger than
//! `max_body_bytes` are sent once, without retries. Every call (retried or not) deposits into the
//! budget; every retry withdraws, so under a sustained outage retries stay near
//! `budget_percent` of calls plus the `budget_min_per_sec` reserve. Local rejections (breaker
//! open, bulkhead full) are never retried.
//!
//! Each attempt of a retryable call has its own deadline: an even share of the time left over
//! the attempts left, the last one getting all of it (2 s and 3 attempts: about 667 ms each).
//! It goes out as the attempt's `grpc-timeout` and `Deadline` extension, so tonic's channel
//! fails an attempt to a hung endpoint while the call still has time to succeed elsewhere, and
//! outlier ejection and the breaker count it against that endpoint. A share shorter than
//! `min_attempt_timeout` is not worth cutting a healthy endpoint's answer for: such an attempt
//! gets all the time left. Calls that are not retried keep the whole deadline.
//!
//! Why not `tower::retry::Retry`: it clones the whole inner stack (bulkhead, breaker, channel)
//! for every call and drops it afterwards, retried or not (about 2 k of 175 k instructions per
//! call in the benchmark, by callgrind at ±1 k). Here the first attempt goes to the service that `poll_ready`
//! made ready, a unary body is buffered without waiting (tonic encodes it up front), and a
//! clone of the inner service is made only when a retry actually happens.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tonic::Code;
use tonic::body::Body;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service};

use crate::Rejection;
use crate::classify::grpc_code;
use crate::deadline::{self, Deadline};

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
    /// The shortest share of the deadline an attempt is cut to (see the module docs).
    pub min_attempt_timeout: Duration,
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
            min_attempt_timeout: Duration::from_millis(200),
        }
    }
}

#[derive(Debug)]
struct Shared {
    config: RetryConfig,
    idempotent: IdempotentPaths,
    budget: TpsBudget,
}

/// [`RetryConfig::idempotent_methods`] compiled for the per-call check: sorted exact paths and
/// sorted service prefixes (`/pkg.Service/`), searched without hashing or allocating.
#[derive(Debug, Default)]
struct IdempotentPaths {
    exact: Vec<Box<str>>,
    services: Vec<Box<str>>,
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
    /// A clone of `inner` kept aside: retries clone it (only when they happen).
    spare: Arc<S>,
    shared: Arc<Shared>,
}

/// What a retryable call keeps to send itself again.
#[derive(Debug)]
struct Replayable<S> {
    shared: Arc<Shared>,
    spare: Arc<S>,
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    extensions: http::Extensions,
    body: Bytes,
    /// Attempts sent so far.
    attempts: u32,
    /// Whether later attempts are allowed (not when the body was too large to keep).
    retries: bool,
    deadline: Option<Deadline>,
}

pin_project! {
    /// Where a call is.
    #[project = PhaseProj]
    enum Phase<S, F> {
        /// Collecting a request body that was not ready at once.
        Buffering { body: Body, chunks: BytesMut },
        /// A clone of the inner service, waiting to be ready for the next attempt.
        Readying { service: S },
        /// An attempt in flight.
        Calling { #[pin] future: F },
        /// Waiting before the next attempt.
        Backoff { #[pin] sleep: Sleep },
        /// Answered without an attempt (the request body failed).
        Answered { response: Option<http::Response<Body>> },
    }
}

/// How many attempts an answered retryable call took (1: no retry), as an extension of its
/// response, for metrics outside the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts(pub u32);

pin_project! {
    /// Response future of [`Retry`].
    pub struct ResponseFuture<S, F> {
        #[pin]
        phase: Phase<S, F>,
        // `None`: the call is not retryable and this is a plain pass-through.
        replay: Option<Replayable<S>>,
    }
}

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

/// The outcome of reading a request body without waiting.
enum Buffered {
    /// The whole body.
    Complete(Bytes),
    /// The body is not finished yet; what it gave so far.
    Partial(BytesMut),
    /// The body failed.
    Failed(tonic::Status),
}

/// Reads `body` as far as it goes without waiting. tonic's unary request bodies are encoded up
/// front, so this normally returns the whole message.
fn buffer_now(body: &mut Body, chunks: &mut BytesMut) -> Poll<Result<(), tonic::Status>> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    poll_body(body, chunks, &mut cx)
}

/// Polls `body` until it ends, collecting data frames into `chunks` (trailers are dropped, as
/// `collect().to_bytes()` would).
fn poll_body(
    body: &mut Body,
    chunks: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Result<(), tonic::Status>> {
    loop {
        match std::task::ready!(Pin::new(&mut *body).poll_frame(cx)) {
            None => return Poll::Ready(Ok(())),
            Some(Err(status)) => return Poll::Ready(Err(status)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    chunks.extend_from_slice(&data);
                }
            }
        }
    }
}

// === impl RetryConfig ===

impl RetryConfig {
    /// Whether `path` is declared idempotent.
    pub fn is_idempotent(&self, path: &str) -> bool {
        IdempotentPaths::new(&self.idempotent_methods).contains(path)
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

// === impl IdempotentPaths ===

impl IdempotentPaths {
    fn new(methods: &HashSet<String>) -> Self {
        let mut paths = Self::default();
        for method in methods {
            match method.strip_suffix('*') {
                Some(service) => paths.services.push(service.into()),
                None => paths.exact.push(method.as_str().into()),
            }
        }
        paths.exact.sort_unstable();
        paths.services.sort_unstable();
        paths
    }

    fn contains(&self, path: &str) -> bool {
        let service = path.rfind('/').map_or("", |slash| &path[..=slash]);
        self.exact.binary_search_by(|p| (**p).cmp(path)).is_ok()
            || self
                .services
                .binary_search_by(|p| (**p).cmp(service))
                .is_ok()
    }
}

// === impl RetryLayer ===

impl RetryLayer {
    /// Retries per `config`, with a fresh budget.
    pub fn new(config: RetryConfig) -> Self {
        let budget = config.budget();
        let idempotent = IdempotentPaths::new(&config.idempotent_methods);
        Self {
            shared: Arc::new(Shared {
                config,
                idempotent,
                budget,
            }),
        }
    }
}

impl<S: Clone> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            spare: Arc::new(inner.clone()),
            inner,
            shared: self.shared.clone(),
        }
    }
}

// === impl Retry ===

impl<S> Service<http::Request<Body>> for Retry<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let shared = &self.shared;
        shared.budget.deposit();
        if shared.config.max_attempts <= 1 || !shared.idempotent.contains(req.uri().path()) {
            return ResponseFuture::once(self.inner.call(req));
        }
        let (parts, mut body) = req.into_parts();
        let mut chunks = BytesMut::new();
        let buffered = match buffer_now(&mut body, &mut chunks) {
            Poll::Ready(Ok(())) => Buffered::Complete(chunks.freeze()),
            Poll::Ready(Err(status)) => Buffered::Failed(status),
            Poll::Pending => Buffered::Partial(chunks),
        };
        let bytes = match buffered {
            Buffered::Complete(bytes) => bytes,
            Buffered::Failed(status) => return ResponseFuture::answered(status.into_http()),
            Buffered::Partial(chunks) => {
                // Unusual (a streaming body on a method declared idempotent): finish buffering
                // in the future, then attempt with a clone of the inner service.
                let replay = Replayable::new(self, parts, Bytes::new());
                return ResponseFuture {
                    phase: Phase::Buffering { body, chunks },
                    replay: Some(replay),
                };
            }
        };
        if bytes.len() > shared.config.max_body_bytes {
            let req = http::Request::from_parts(parts, Body::new(Replay(Some(bytes))));
            return ResponseFuture::once(self.inner.call(req));
        }
        // The first attempt goes to the service `poll_ready` made ready; a copy stays behind.
        let mut replay = Replayable::new(self, Parts::copy(&parts), bytes.clone());
        let mut parts = parts;
        // ClientDeadline stamped the call's deadline already: re-stamp only a shorter share.
        if let Some(attempt) = replay.attempt_deadline()
            && Some(attempt) != replay.deadline
        {
            deadline::stamp(&mut parts.headers, attempt);
            parts.extensions.insert(attempt);
        }
        replay.attempts = 1;
        let req = http::Request::from_parts(parts, Body::new(Replay(Some(bytes))));
        ResponseFuture {
            phase: Phase::Calling {
                future: self.inner.call(req),
            },
            replay: Some(replay),
        }
    }
}

/// The parts of a request a retry needs (`http::request::Parts` is not `Clone`).
struct Parts {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
    extensions: http::Extensions,
}

impl Parts {
    fn copy(parts: &http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            extensions: parts.extensions.clone(),
        }
    }
}

impl From<http::request::Parts> for Parts {
    fn from(parts: http::request::Parts) -> Self {
        Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            extensions: parts.extensions,
        }
    }
}

// === impl Replayable ===

impl<S> Replayable<S> {
    fn new(retry: &Retry<S>, parts: impl Into<Parts>, body: Bytes) -> Self {
        let parts = parts.into();
        Self {
            shared: retry.shared.clone(),
            spare: retry.spare.clone(),
            deadline: parts.extensions.get::<Deadline>().copied(),
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            extensions: parts.extensions,
            body,
            attempts: 0,
            retries: true,
        }
    }

    /// The next attempt: a copy of the request with `grpc-timeout` set to the time left.
    fn request(&self) -> http::Request<Body> {
        let mut req = http::Request::new(Body::new(Replay(Some(self.body.clone()))));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        *req.extensions_mut() = self.extensions.clone();
        if let Some(attempt) = self.attempt_deadline() {
            deadline::stamp(req.headers_mut(), attempt);
            req.extensions_mut().insert(attempt);
        }
        req
    }

    /// The next attempt's deadline (see the module docs), sent as its `grpc-timeout` and
    /// [`Deadline`] extension; the call's own deadline stays in `self.deadline`.
    fn attempt_deadline(&self) -> Option<Deadline> {
        let call = self.deadline?;
        let now = tokio::time::Instant::now();
        let left = self
            .shared
            .config
            .max_attempts
            .saturating_sub(self.attempts)
            .max(1);
        let share = call.instant().saturating_duration_since(now) / left;
        let split = left > 1 && self.retries && share >= self.shared.config.min_attempt_timeout;
        Some(if split {
            Deadline::at(now + share)
        } else {
            call
        })
    }

    fn is_retryable<E>(&self, result: &Result<http::Response<Body>, E>) -> bool {
        match result {
            Err(_) => true,
            Ok(response) if Rejection::of(response).is_some() => false,
            Ok(response) => grpc_code(response)
                .is_some_and(|code| self.shared.config.retryable_codes.contains(&code)),
        }
    }

    /// The backoff before another attempt, or `None` to return `result` as it is.
    fn backoff<E>(&self, result: &Result<http::Response<Body>, E>) -> Option<Duration> {
        let config = &self.shared.config;
        if !self.retries || self.attempts >= config.max_attempts || !self.is_retryable(result) {
            return None;
        }
        let path = self.uri.path();
        let backoff = config.backoff(self.attempts);
        if self.deadline.is_some_and(|d| d.remaining() <= backoff) {
            tracing::debug!(path, "not retrying: deadline too close");
            return None;
        }
        if !self.shared.budget.withdraw() {
            tracing::debug!(path, "not retrying: retry budget exhausted");
            return None;
        }
        tracing::debug!(path, attempt = self.attempts + 1, ?backoff, "retrying");
        Some(backoff)
    }
}

// === impl ResponseFuture ===

/// The answer to a future polled after it completed (every phase but `Calling` and `Answered`
/// exists only with a [`Replayable`]).
fn misuse() -> http::Response<Body> {
    tonic::Status::internal("retry future polled after completion").into_http()
}

impl<S, F> ResponseFuture<S, F> {
    fn once(future: F) -> Self {
        Self {
            phase: Phase::Calling { future },
            replay: None,
        }
    }

    fn answered(response: http::Response<Body>) -> Self {
        Self {
            phase: Phase::Answered {
                response: Some(response),
            },
            replay: None,
        }
    }
}

impl<S, F, E> Future for ResponseFuture<S, F>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = E, Future = F> + Clone,
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.phase.as_mut().project() {
                PhaseProj::Answered { response } => {
                    return Poll::Ready(Ok(response.take().unwrap_or_else(misuse)));
                }
                PhaseProj::Calling { future } => {
                    let result = std::task::ready!(future.poll(cx));
                    let Some(replay) = this.replay.as_mut() else {
                        return Poll::Ready(result);
                    };
                    let Some(backoff) = replay.backoff(&result) else {
                        let attempts = Attempts(replay.attempts);
                        return Poll::Ready(result.map(|mut response| {
                            response.extensions_mut().insert(attempts);
                            response
                        }));
                    };
                    Phase::Backoff {
                        sleep: tokio::time::sleep(backoff),
                    }
                }
                PhaseProj::Backoff { sleep } => {
                    std::task::ready!(sleep.poll(cx));
                    match this.replay.as_ref() {
                        Some(replay) => Phase::Readying {
                            service: (*replay.spare).clone(),
                        },
                        None => return Poll::Ready(Ok(misuse())),
                    }
                }
                PhaseProj::Readying { service } => {
                    std::task::ready!(service.poll_ready(cx))?;
                    let Some(replay) = this.replay.as_mut() else {
                        return Poll::Ready(Ok(misuse()));
                    };
                    let req = replay.request();
                    replay.attempts += 1;
                    Phase::Calling {
                        future: service.call(req),
                    }
                }
                PhaseProj::Buffering { body, chunks } => {
                    let outcome = std::task::ready!(poll_body(body, chunks, cx));
                    let Some(replay) = this.replay.as_mut() else {
                        return Poll::Ready(Ok(misuse()));
                    };
                    if let Err(status) = outcome {
                        return Poll::Ready(Ok(status.into_http()));
                    }
                    replay.body = std::mem::take(chunks).freeze();
                    replay.retries = replay.body.len() <= replay.shared.config.max_body_bytes;
                    Phase::Readying {
                        service: (*replay.spare).clone(),
                    }
                }
            };
            this.phase.set(next);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex;

    use http_body_util::BodyExt;

    use super::*;

    /// A body that is not ready on its first poll, then yields two chunks.
    struct Slow {
        polled: bool,
        chunks: Vec<Bytes>,
    }

    impl http_body::Body for Slow {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if !self.polled {
                self.polled = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready((!self.chunks.is_empty()).then(|| Ok(Frame::data(self.chunks.remove(0)))))
        }
    }

    /// Answers UNAVAILABLE `failures` times, then OK; records every body it receives.
    #[derive(Clone)]
    struct Flaky {
        failures: Arc<Mutex<u32>>,
        bodies: Arc<Mutex<Vec<Bytes>>>,
    }

    impl Service<http::Request<Body>> for Flaky {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<Body>) -> Self::Future {
            let this = self.clone();
            Box::pin(async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                this.bodies.lock().unwrap().push(body);
                let mut failures = this.failures.lock().unwrap();
                if *failures > 0 {
                    *failures -= 1;
                    return Ok(tonic::Status::unavailable("flaky").into_http());
                }
                Ok(http::Response::new(Body::empty()))
            })
        }
    }

    #[tokio::test]
    async fn a_body_not_ready_at_once_is_buffered_and_replayed_whole() {
        use tower::ServiceExt;

        let flaky = Flaky {
            failures: Arc::new(Mutex::new(2)),
            bodies: Arc::default(),
        };
        let layer = RetryLayer::new(RetryConfig {
            idempotent_methods: ["/a.S/Get".to_owned()].into(),
            base_backoff: Duration::from_millis(1),
            ..RetryConfig::default()
        });
        let body = Slow {
            polled: false,
            chunks: vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")],
        };
        let req = http::Request::builder()
            .uri("/a.S/Get")
            .body(Body::new(body))
            .unwrap();
        let response = layer.layer(flaky.clone()).oneshot(req).await.unwrap();
        assert_eq!(grpc_code(&response), None, "third attempt succeeds");
        let bodies = flaky.bodies.lock().unwrap();
        assert_eq!(bodies.len(), 3);
        assert!(
            bodies.iter().all(|b| b.as_ref() == b"hello world"),
            "{bodies:?}"
        );
    }

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
