//! Outlier ejection for one endpoint under the balancer.
//!
//! After `consecutive_failures` failed calls in a row the endpoint reports "not ready" for
//! `ejection_time`, so p2c routes around it; afterwards it is ready again and a single further
//! failure ejects it again. An [`EjectionPool`] shared by all endpoints of a dependency never
//! ejects the last healthy-looking endpoint: with every endpoint failing, calls still go out and
//! the breaker above decides.
//!
//! An attempt counts as failed when it errs (tonic's channel fails an attempt whose
//! `grpc-timeout` runs out), answers an unhealthy status, or is dropped unanswered at or after
//! its [`Deadline`]: a blackholed endpoint never answers, and the caller's own deadline timer is
//! what ends those attempts. The retry layer gives each attempt of a retryable call a share of
//! the call's deadline (see [`crate::retry`]), so such an endpoint is ejected while the call
//! still has time to succeed elsewhere.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::classify::{self, Outcome};
use crate::deadline::Deadline;

/// When to eject an endpoint and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EjectConfig {
    /// Consecutive failures that eject the endpoint.
    pub consecutive_failures: u32,
    /// How long an ejected endpoint gets no calls.
    pub ejection_time: Duration,
}

impl Default for EjectConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            ejection_time: Duration::from_secs(10),
        }
    }
}

/// Shared by all endpoints of one dependency: how many exist and how many are ejected.
#[derive(Debug, Default)]
pub struct EjectionPool {
    endpoints: AtomicUsize,
    ejected: AtomicUsize,
}

#[derive(Debug)]
struct EndpointState {
    addr: SocketAddr,
    config: EjectConfig,
    pool: Arc<EjectionPool>,
    consecutive: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

/// One endpoint's service with outlier ejection.
#[derive(Debug)]
pub struct Eject<S> {
    inner: S,
    state: Arc<EndpointState>,
    sleep: Option<Pin<Box<Sleep>>>,
}

pin_project! {
    /// Response future of [`Eject`].
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        state: Arc<EndpointState>,
        // The attempt's deadline: dropped unanswered at or after it, the attempt failed.
        deadline: Option<Instant>,
        done: bool,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.done && this.deadline.is_some_and(|d| Instant::now() >= d) {
                this.state.record(Some(Outcome::Failure));
            }
        }
    }
}

// === impl EjectionPool ===

impl EjectionPool {
    /// Endpoints currently ejected.
    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Acquire)
    }

    fn try_eject(&self) -> bool {
        let endpoints = self.endpoints.load(Ordering::Acquire);
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |ejected| {
                (ejected + 1 < endpoints).then_some(ejected + 1)
            })
            .is_ok()
    }
}

// === impl EndpointState ===

impl EndpointState {
    fn record(&self, outcome: Option<Outcome>) {
        match outcome {
            Some(Outcome::Success) => self.consecutive.store(0, Ordering::Release),
            Some(Outcome::Failure) => {
                let failures = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
                if failures >= self.config.consecutive_failures {
                    self.eject();
                }
            }
            None => {}
        }
    }

    fn eject(&self) {
        let mut until = self
            .ejected_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if until.is_some() || !self.pool.try_eject() {
            return;
        }
        *until = Some(Instant::now() + self.config.ejection_time);
        tracing::warn!(endpoint = %self.addr, "endpoint ejected after consecutive failures");
    }

    /// The end of the current ejection, clearing it once it is over.
    fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let mut until = self
            .ejected_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *until {
            Some(end) if now < end => Some(end),
            Some(_) => {
                *until = None;
                self.pool.ejected.fetch_sub(1, Ordering::AcqRel);
                // One more failure ejects it again.
                let again = self.config.consecutive_failures.saturating_sub(1);
                self.consecutive.store(again, Ordering::Release);
                tracing::info!(endpoint = %self.addr, "endpoint back from ejection");
                None
            }
            None => None,
        }
    }
}

impl Drop for EndpointState {
    fn drop(&mut self) {
        self.pool.endpoints.fetch_sub(1, Ordering::AcqRel);
        let until = self
            .ejected_until
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if until.is_some() {
            self.pool.ejected.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

// === impl Eject ===

impl<S> Eject<S> {
    /// Wraps the service for endpoint `addr`, counted in `pool`.
    pub fn new(inner: S, addr: SocketAddr, config: EjectConfig, pool: Arc<EjectionPool>) -> Self {
        pool.endpoints.fetch_add(1, Ordering::AcqRel);
        let state = EndpointState {
            addr,
            config,
            pool,
            consecutive: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
        };
        Self {
            inner,
            state: Arc::new(state),
            sleep: None,
        }
    }
}

impl<S, B, RB> Service<http::Request<B>> for Eject<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(until) = self.state.ejected_until(Instant::now()) {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
            sleep.as_mut().reset(until);
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The ejection just ended: clear it before asking the inner service.
            let _ = self.state.ejected_until(Instant::now());
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let deadline = req.extensions().get::<Deadline>().map(|d| d.instant());
        ResponseFuture {
            future: self.inner.call(req),
            state: self.state.clone(),
            deadline,
            done: false,
        }
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.future.poll(cx));
        *this.done = true;
        this.state.record(classify::outcome(&result));
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::convert::Infallible;

    use tower::ServiceExt as _;

    use super::*;

    /// An endpoint that never answers, like one behind a blackhole.
    fn blackhole()
    -> impl Service<http::Request<()>, Response = http::Response<()>, Error = Infallible> + Clone
    {
        tower::service_fn(|_req: http::Request<()>| {
            futures::future::pending::<Result<http::Response<()>, Infallible>>()
        })
    }

    fn request(deadline: Option<Deadline>) -> http::Request<()> {
        let mut req = http::Request::new(());
        if let Some(deadline) = deadline {
            req.extensions_mut().insert(deadline);
        }
        req
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_dropped_at_their_deadline_eject_the_endpoint() {
        let pool = Arc::new(EjectionPool::default());
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let other = Eject::new(blackhole(), addr, EjectConfig::default(), pool.clone());
        let mut eject = Eject::new(blackhole(), addr, EjectConfig::default(), pool.clone());
        let attempt = Duration::from_millis(100);

        // A caller that gives up before the deadline says nothing about the endpoint.
        for _ in 0..10 {
            let future = eject
                .ready()
                .await
                .unwrap()
                .call(request(Some(Deadline::after(attempt))));
            drop(future);
        }
        assert_eq!(pool.ejected(), 0);

        // Unanswered at the deadline: each counts, and the fifth ejects.
        for _ in 0..EjectConfig::default().consecutive_failures {
            let future = eject
                .ready()
                .await
                .unwrap()
                .call(request(Some(Deadline::after(attempt))));
            let _ = tokio::time::timeout(attempt, future).await;
        }
        assert_eq!(pool.ejected(), 1);
        drop(other);
    }
}
