//! Outlier ejection for one endpoint under the balancer.
//!
//! After `consecutive_failures` failed calls in a row the endpoint reports "not ready" for
//! `ejection_time`, so p2c routes around it; afterwards it is ready again and a single further
//! failure ejects it again. An [`EjectionPool`] shared by all endpoints of a dependency never
//! ejects the last healthy-looking endpoint: with every endpoint failing, calls still go out and
//! the breaker above decides.

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
        ResponseFuture {
            future: self.inner.call(req),
            state: self.state.clone(),
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
        this.state.record(classify::outcome(&result));
        Poll::Ready(result)
    }
}
