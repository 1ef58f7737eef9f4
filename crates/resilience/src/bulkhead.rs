//! Bulkhead: a per-dependency concurrency limit with a bounded, timed wait queue.
//!
//! tower's `ConcurrencyLimit` waits without bound; a bulkhead must instead reject early so one slow
//! dependency cannot absorb every task of the caller. Calls beyond `max_concurrent` wait in a queue
//! of at most `max_queue` for at most `queue_timeout`; the rest are answered
//! `RESOURCE_EXHAUSTED` ([`Rejection::BulkheadFull`] / [`Rejection::QueueTimeout`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service, ServiceExt};

use crate::Rejection;

/// Bulkhead limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadConfig {
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// Calls allowed to wait for a slot.
    pub max_queue: usize,
    /// Longest wait for a slot.
    pub queue_timeout: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 100,
            max_queue: 100,
            queue_timeout: Duration::from_millis(100),
        }
    }
}

#[derive(Debug)]
struct Shared {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    config: BulkheadConfig,
}

/// Builds [`Bulkhead`] services sharing one set of slots.
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    shared: Arc<Shared>,
}

/// A service behind a bulkhead.
#[derive(Debug, Clone)]
pub struct Bulkhead<S> {
    inner: S,
    shared: Arc<Shared>,
}

pin_project! {
    /// Response future of [`Bulkhead`].
    #[project = ResponseFutureProj]
    pub enum ResponseFuture<S, Req, R, E>
    where
        S: Service<Req>,
    {
        /// A slot was free at once: the call holds it until it completes.
        Admitted { #[pin] call: S::Future, permit: OwnedSemaphorePermit },
        /// Waiting in the queue (or rejected), then calling.
        Queued { future: Pin<Box<dyn Future<Output = Result<R, E>> + Send>> },
    }
}

/// Decrements the queue length when a waiter leaves, however it leaves.
struct QueueSlot(Arc<Shared>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl BulkheadLayer ===

impl BulkheadLayer {
    /// A bulkhead with `config`'s limits.
    pub fn new(config: BulkheadConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                slots: Arc::new(Semaphore::new(config.max_concurrent)),
                queued: AtomicUsize::new(0),
                config,
            }),
        }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            shared: self.shared.clone(),
        }
    }
}

// === impl Bulkhead ===

impl Shared {
    async fn acquire(self: Arc<Self>) -> Result<OwnedSemaphorePermit, Rejection> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.config.max_queue {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejection::BulkheadFull);
        }
        let _slot = QueueSlot(self.clone());
        let wait = self.slots.clone().acquire_owned();
        match tokio::time::timeout(self.config.queue_timeout, wait).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a full bulkhead anyway.
            Ok(Err(_closed)) => Err(Rejection::BulkheadFull),
            Err(_elapsed) => Err(Rejection::QueueTimeout),
        }
    }
}

impl<S, B, RB> Service<http::Request<B>> for Bulkhead<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S, http::Request<B>, Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Inner readiness is transport capacity (a channel's buffer, the balancer's handle), not
        // a dependency slot: waiting for it holds no slot.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Ok(permit) = self.shared.slots.clone().try_acquire_owned() {
            // Fast path: the ready inner service takes the call, no clone.
            return ResponseFuture::Admitted {
                call: self.inner.call(req),
                permit,
            };
        }
        // Queued: a clone waits for a slot (and then for its own readiness), leaving `inner`'s
        // reserved readiness to the next call.
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        ResponseFuture::Queued {
            future: Box::pin(async move {
                match shared.acquire().await {
                    Ok(_permit) => inner.oneshot(req).await,
                    Err(rejection) => Ok(rejection.into_response()),
                }
            }),
        }
    }
}

impl<S, Req, R, E> Future for ResponseFuture<S, Req, R, E>
where
    S: Service<Req, Response = R, Error = E>,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Admitted { call, permit: _ } => call.poll(cx),
            ResponseFutureProj::Queued { future } => future.as_mut().poll(cx),
        }
    }
}
