//! Circuit breaker: stop calling a dependency that is failing, probe it carefully, resume.
//!
//! - **Closed**: calls pass; outcomes go into a time-based sliding window. The breaker opens when
//!   the window holds at least `min_calls` calls and the failure rate reaches `failure_rate`, or
//!   after `consecutive_failures` failures in a row.
//! - **Open**: calls fail fast with `UNAVAILABLE` ([`Rejection::CircuitOpen`]) without touching
//!   the dependency, for `open_timeout`.
//! - **Half-open**: at most `half_open_probes` calls are in flight at once, however many callers
//!   race; everyone else fails fast. `close_after` successful probes close the breaker; one
//!   failed probe reopens it.
//!
//! Only unhealthy outcomes count (see [`crate::classify`]): `UNAVAILABLE`, `DEADLINE_EXCEEDED`,
//! `RESOURCE_EXHAUSTED`, `INTERNAL` and transport errors. Classification uses the response
//! headers (trailers-only answers), which covers unary calls; a status that arrives in trailers
//! after a body is not observed. A call dropped at or after its [`Deadline`] counts as a failure.
//! Local rejections from inner layers are ignored.
//!
//! Transitions are logged with `tracing` and readable through [`BreakerHandle::state`].

mod machine;
mod window;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::Rejection;
use crate::classify;
use crate::deadline::Deadline;
use machine::{Permit, Shared};

/// Breaker thresholds and timings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Width of the sliding window the failure rate is computed over.
    pub window: Duration,
    /// Calls the window must hold before the failure rate can open the breaker.
    pub min_calls: u32,
    /// Failure rate (0.0..=1.0) over the window that opens the breaker.
    pub failure_rate: f64,
    /// Consecutive failures that open the breaker regardless of the rate.
    pub consecutive_failures: u32,
    /// How long the breaker stays open before admitting probes.
    pub open_timeout: Duration,
    /// Probes allowed in flight at once while half-open.
    pub half_open_probes: u32,
    /// Successful probes that close the breaker.
    pub close_after: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            min_calls: 20,
            failure_rate: 0.5,
            consecutive_failures: 5,
            open_timeout: Duration::from_secs(5),
            half_open_probes: 2,
            close_after: 3,
        }
    }
}

/// Public breaker state, as exposed to metrics and `meshctl status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BreakerState {
    /// Calls flow normally.
    Closed = 0,
    /// Calls fail fast.
    Open = 1,
    /// A limited number of probes test the dependency.
    HalfOpen = 2,
}

/// A cheap, cloneable view of one breaker's state (an atomic load per read).
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
}

/// Builds [`CircuitBreaker`] services that all share one breaker state.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    shared: Arc<Shared>,
}

/// A service guarded by a circuit breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
}

pin_project! {
    /// Response future of [`CircuitBreaker`].
    #[project = ResponseFutureProj]
    pub enum ResponseFuture<F> {
        /// Rejected without calling the inner service.
        Rejected { rejection: Rejection },
        /// Admitted; the permit records the outcome.
        Called { #[pin] future: F, permit: Option<Permit> },
    }
}

// === impl BreakerHandle ===

impl BreakerHandle {
    /// The breaker's current state.
    pub fn state(&self) -> BreakerState {
        self.shared.state()
    }

    /// The dependency name this breaker guards.
    pub fn name(&self) -> &str {
        self.shared.name()
    }
}

// === impl CircuitBreakerLayer ===

impl CircuitBreakerLayer {
    /// A breaker for the dependency `name`.
    pub fn new(name: impl Into<Arc<str>>, config: BreakerConfig) -> Self {
        Self {
            shared: Arc::new(Shared::new(name.into(), config)),
        }
    }

    /// A handle to read this breaker's state.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            shared: self.shared.clone(),
        }
    }
}

// === impl CircuitBreaker ===

impl<S> CircuitBreaker<S> {
    /// A handle to read this breaker's state.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, B, RB> Service<http::Request<B>> for CircuitBreaker<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let deadline = req.extensions().get::<Deadline>().map(|d| d.instant());
        match self.shared.admit(deadline) {
            Ok(permit) => ResponseFuture::Called {
                future: self.inner.call(req),
                permit: Some(permit),
            },
            Err(rejection) => ResponseFuture::Rejected { rejection },
        }
    }
}

// === impl ResponseFuture ===

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    RB: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Rejected { rejection } => {
                Poll::Ready(Ok(rejection.into_response()))
            }
            ResponseFutureProj::Called { future, permit } => {
                let result = std::task::ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.finish(classify::outcome(&result));
                }
                Poll::Ready(result)
            }
        }
    }
}
