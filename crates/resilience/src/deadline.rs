//! Deadline propagation over `grpc-timeout`.
//!
//! - Server side, [`ServerDeadlineLayer`] reads the incoming `grpc-timeout`, stores a
//!   [`Deadline`] in the request extensions and runs the handler inside a task-local scope, so
//!   code anywhere in the handler can ask [`current`] for the remaining budget. (tonic's server
//!   already enforces the timeout itself; this layer only exposes it.)
//! - Client side, [`ClientDeadlineLayer`] sends the smallest of its own timeout, the task-local
//!   deadline, a [`Deadline`] extension on the request and any `grpc-timeout` already on the
//!   request, and answers `DEADLINE_EXCEEDED` locally when it passes (or has already passed:
//!   then the dependency is not called at all). tonic's channel also enforces the
//!   `grpc-timeout` it is given and may fail first with a transport timeout; an error that
//!   arrives after the deadline is reported as `DEADLINE_EXCEEDED` too.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::{Instant, Timeout};
use tower::{Layer, Service};

use crate::Rejection;

/// The `grpc-timeout` header; a prebuilt name skips parsing and validating it on every lookup.
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

tokio::task_local! {
    static CURRENT: Option<Deadline>;
}

/// The instant by which a call must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

// === impl Deadline ===

impl Deadline {
    /// A deadline at `instant`.
    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// The instant of this deadline.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left until the deadline (zero once it passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(self) -> bool {
        Instant::now() >= self.0
    }
}

/// The deadline of the inbound call this task is serving, if it has one.
///
/// Set by [`ServerDeadlineLayer`] (or [`scope`]); the client stack picks it up on its own, so
/// handlers only need this to decide whether work is still worth starting.
pub fn current() -> Option<Deadline> {
    CURRENT.try_with(|d| *d).ok().flatten()
}

/// Runs `future` with `deadline` as the [`current`] deadline.
pub fn scope<F: Future>(
    deadline: Option<Deadline>,
    future: F,
) -> TaskLocalFuture<Option<Deadline>, F> {
    CURRENT.scope(deadline, future)
}

/// Parses a `grpc-timeout` value (1-8 digits and a unit `H M S m u n`).
pub fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Encodes `timeout` as a `grpc-timeout` value in the finest unit that fits 8 digits.
pub fn encode_grpc_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let candidates = [
        (nanos, 'n'),
        (nanos / 1_000, 'u'),
        (nanos / 1_000_000, 'm'),
        (nanos / 1_000_000_000, 'S'),
        (nanos / 60_000_000_000, 'M'),
    ];
    let (amount, unit) = candidates
        .into_iter()
        .find(|(amount, _)| *amount <= MAX)
        .unwrap_or(((nanos / 3_600_000_000_000).min(MAX), 'H'));
    // At most 8 digits and the unit, written without a `format!` (this runs on every call).
    let mut buf = [0u8; 9];
    let mut start = 8;
    let mut rest = amount;
    loop {
        start -= 1;
        buf[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 || start == 0 {
            break;
        }
    }
    buf[8] = unit as u8;
    HeaderValue::from_bytes(&buf[start..]).unwrap_or(HeaderValue::from_static("0n"))
}

/// Sets `grpc-timeout` to the time left until `deadline`.
///
/// The value is marked sensitive so HPACK sends it as a never-indexed literal: it differs on
/// every call, and indexing it would churn the connection's header table, evicting the
/// headers that do repeat (path, content type, caller id) so they too go out as literals.
pub fn stamp(headers: &mut HeaderMap, deadline: Deadline) {
    stamp_at(headers, deadline, Instant::now());
}

/// [`stamp`] with the current time already read.
fn stamp_at(headers: &mut HeaderMap, deadline: Deadline, now: Instant) {
    let mut value = encode_grpc_timeout(deadline.0.saturating_duration_since(now));
    value.set_sensitive(true);
    headers.insert(GRPC_TIMEOUT, value);
}

/// The deadline a request arrives with: its `grpc-timeout` counted from `now`, or a
/// [`Deadline`] extension, whichever is sooner.
fn incoming<B>(req: &http::Request<B>, now: Instant) -> Option<Deadline> {
    let timeout = req.headers().get(GRPC_TIMEOUT).and_then(parse_grpc_timeout);
    let from_header = timeout.map(|t| Deadline(now + t));
    let from_ext = req.extensions().get::<Deadline>().copied();
    from_header.into_iter().chain(from_ext).min()
}

/// Reads `grpc-timeout` on inbound calls into a [`Deadline`] extension and the task-local scope.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerDeadlineLayer;

/// See [`ServerDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct ServerDeadline<S> {
    inner: S,
}

impl<S> Layer<S> for ServerDeadlineLayer {
    type Service = ServerDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerDeadline { inner }
    }
}

// === impl ServerDeadline ===

impl<S, B> Service<http::Request<B>> for ServerDeadline<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<Option<Deadline>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let deadline = incoming(&req, Instant::now());
        if let Some(deadline) = deadline {
            req.extensions_mut().insert(deadline);
        }
        let future = CURRENT.sync_scope(deadline, || self.inner.call(req));
        CURRENT.scope(deadline, future)
    }
}

/// Sends the smallest applicable deadline as `grpc-timeout` and enforces it locally.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientDeadlineLayer {
    timeout: Option<Duration>,
}

/// See [`ClientDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct ClientDeadline<S> {
    inner: S,
    timeout: Option<Duration>,
}

pin_project! {
    /// Response future of [`ClientDeadline`].
    #[project = ClientFutureProj]
    pub enum ClientFuture<F> {
        /// The deadline had passed before the call started.
        Expired,
        /// No deadline applies.
        Unbounded { #[pin] future: F },
        /// The call races its deadline.
        Bounded { #[pin] future: Timeout<F>, deadline: Deadline },
    }
}

// === impl ClientDeadlineLayer ===

impl ClientDeadlineLayer {
    /// Calls get at most `timeout` (`None`: only propagated deadlines apply).
    pub fn new(timeout: Option<Duration>) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for ClientDeadlineLayer {
    type Service = ClientDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientDeadline {
            inner,
            timeout: self.timeout,
        }
    }
}

// === impl ClientDeadline ===

impl<S, B, RB> Service<http::Request<B>> for ClientDeadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // One clock read serves the whole decision (this runs on every call).
        let now = Instant::now();
        let own = self.timeout.map(|t| Deadline(now + t));
        let Some(deadline) = [own, current(), incoming(&req, now)]
            .into_iter()
            .flatten()
            .min()
        else {
            return ClientFuture::Unbounded {
                future: self.inner.call(req),
            };
        };
        if now >= deadline.0 {
            return ClientFuture::Expired;
        }
        stamp_at(req.headers_mut(), deadline, now);
        req.extensions_mut().insert(deadline);
        ClientFuture::Bounded {
            future: tokio::time::timeout_at(deadline.instant(), self.inner.call(req)),
            deadline,
        }
    }
}

impl<F, RB, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    RB: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ClientFutureProj::Expired => {
                Poll::Ready(Ok(Rejection::DeadlineExceeded.into_response()))
            }
            ClientFutureProj::Unbounded { future } => future.poll(cx),
            ClientFutureProj::Bounded { future, deadline } => {
                match std::task::ready!(future.poll(cx)) {
                    // tonic's channel enforces `grpc-timeout` too and may fail first with a
                    // transport timeout; past the deadline, any error is the deadline's.
                    Ok(Err(_)) | Err(_) if deadline.is_expired() => {
                        Poll::Ready(Ok(Rejection::DeadlineExceeded.into_response()))
                    }
                    Ok(result) => Poll::Ready(result),
                    Err(_elapsed) => Poll::Ready(Ok(Rejection::DeadlineExceeded.into_response())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_round_trips() {
        for timeout in [
            Duration::from_nanos(5),
            Duration::from_millis(250),
            Duration::from_secs(30),
            Duration::from_secs(4 * 3600),
            Duration::ZERO,
            Duration::from_nanos(99_999_999),
            Duration::from_micros(100_000_000),
        ] {
            let encoded = encode_grpc_timeout(timeout);
            assert_eq!(parse_grpc_timeout(&encoded), Some(timeout), "{encoded:?}");
        }
        assert_eq!(encode_grpc_timeout(Duration::ZERO), "0n");
        assert_eq!(encode_grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(
            parse_grpc_timeout(&HeaderValue::from_static("123456789m")),
            None
        );
        assert_eq!(parse_grpc_timeout(&HeaderValue::from_static("10x")), None);
        assert_eq!(parse_grpc_timeout(&HeaderValue::from_static("m")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn current_is_scoped() {
        assert_eq!(current(), None);
        let deadline = Deadline::after(Duration::from_secs(1));
        let seen = scope(Some(deadline), async { current() }).await;
        assert_eq!(seen, Some(deadline));
    }
}
