//! Server load shedding: tower's `ConcurrencyLimit` under tower's `LoadShed`, with the shed
//! error turned into an early `RESOURCE_EXHAUSTED` answer ([`Rejection::Overloaded`]).
//!
//! The limit is global to the server (one semaphore shared by every connection's clone), unlike
//! tonic's per-connection limit. A call arriving while all slots are taken is answered at once
//! instead of queueing, so accepted calls keep the latency of an unloaded server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimit;
use tower::load_shed::LoadShed;
use tower::load_shed::error::Overloaded;
use tower::{Layer, Service};

use crate::{BoxError, Rejection};

/// Builds [`Shed`] services sharing one concurrency limit.
#[derive(Debug, Clone)]
pub struct ShedLayer {
    slots: Arc<Semaphore>,
}

/// A service that answers `RESOURCE_EXHAUSTED` instead of exceeding its concurrency limit.
#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: LoadShed<ConcurrencyLimit<S>>,
}

pin_project! {
    /// Response future of [`Shed`].
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
    }
}

// === impl ShedLayer ===

impl ShedLayer {
    /// At most `max_concurrent` calls in flight across all connections.
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent)),
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let limited = ConcurrencyLimit::with_semaphore(inner, self.slots.clone());
        Shed {
            inner: LoadShed::new(limited),
        }
    }
}

// === impl Shed ===

impl<S, B, RB> Service<http::Request<B>> for Shed<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Default,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future =
        ResponseFuture<<LoadShed<ConcurrencyLimit<S>> as Service<http::Request<B>>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        ResponseFuture {
            future: self.inner.call(req),
        }
    }
}

impl<F, RB> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<RB>, BoxError>>,
    RB: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::task::ready!(self.project().future.poll(cx)) {
            Err(error) if error.is::<Overloaded>() => {
                Poll::Ready(Ok(Rejection::Overloaded.into_response()))
            }
            other => Poll::Ready(other),
        }
    }
}
