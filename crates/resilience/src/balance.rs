//! Client-side load balancing: power-of-two-choices over every endpoint of a dependency.
//!
//! Endpoints come from DNS (a Kubernetes headless service returns one address per pod),
//! re-resolved every `refresh`, or from a static list. Each endpoint is its own
//! `tonic::transport::Channel` (one HTTP/2 connection, so calls spread across pods instead of
//! sticking to the one connection a ClusterIP would give), wrapped in [`Eject`] and measured by
//! pending requests for tower's p2c [`Balance`]. The balancer is shared by every clone of the
//! stack above it through a mutex held only while choosing an endpoint and starting the call
//! ([`Balanced`]); there is no buffer task and no channel hop per call.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::Stream;
use pin_project_lite::pin_project;
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequests};

use crate::BoxError;
use crate::eject::{Eject, EjectConfig, EjectionPool};

/// Where a dependency's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoints {
    /// A fixed list of addresses.
    Static(Vec<SocketAddr>),
    /// A DNS name resolved now and every `refresh` (every A/AAAA record is an endpoint).
    Dns {
        /// Host name, e.g. `payments-headless.shop.svc.cluster.local`.
        host: String,
        /// gRPC port.
        port: u16,
        /// Re-resolution interval.
        refresh: Duration,
    },
}

/// How each endpoint's connection is made.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// A fixed cap on every attempt, inside the channel. Without it (the default) an attempt
    /// still ends at the `grpc-timeout` it carries: its share of the call's deadline (see
    /// [`crate::retry`]), which tonic's channel enforces, so a hung endpoint fails and is
    /// ejected either way.
    pub attempt_timeout: Option<Duration>,
    /// HTTP/2 keepalive ping interval (detects dead or blackholed connections when idle).
    pub keepalive: Duration,
    /// Outlier ejection.
    pub eject: EjectConfig,
    /// Requests tonic's channel buffers for its connection task. Readiness of the channel waits
    /// for room here, outside any call's deadline, so [`connect`](crate::client::connect) raises
    /// it to at least the bulkhead's `max_concurrent`: the bulkhead then bounds what is in
    /// flight before the buffer can fill.
    pub buffer_size: usize,
    /// Mutual TLS for every connection (the caller's certificate, the expected server
    /// identity); plaintext without it.
    pub tls: Option<shop_tls::MtlsConnector>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: None,
            keepalive: Duration::from_secs(10),
            eject: EjectConfig::default(),
            buffer_size: 1024,
            tls: None,
        }
    }
}

/// One endpoint as the balancer sees it.
pub type Endpoint = PendingRequests<Eject<Channel>, CompleteOnResponse>;

/// The balancer: p2c over the discovered endpoints.
pub type Balancer = Balance<EndpointStream, http::Request<Body>>;

/// Response future of the balancer (the chosen endpoint's future).
type BalancerFuture = <Balancer as Service<http::Request<Body>>>::Future;

/// The cloneable handle to one balancer, shared by every clone.
///
/// `poll_ready` is always ready; the returned future waits for the balancer to have a ready
/// endpoint, then chooses one and starts the call, all under a mutex held only for that
/// moment. Callers waiting for readiness park their wakers in a list; the balancer's own
/// registrations point at the last caller that polled it, so whoever gets through (or gives up)
/// wakes the rest to re-register.
#[derive(Clone)]
pub struct Balanced {
    shared: Arc<Mutex<Shared>>,
    ejection: Arc<EjectionPool>,
}

struct Shared {
    balancer: Balancer,
    waiters: Vec<Waker>,
}

pin_project! {
    /// Response future of [`Balanced`].
    #[project = BalancedFutureProj]
    pub enum BalancedFuture {
        /// Waiting for a ready endpoint.
        Waiting { request: Option<http::Request<Body>>, shared: Arc<Mutex<Shared>>, parked: bool },
        /// Dispatched to an endpoint.
        Called { #[pin] future: BalancerFuture },
    }

    impl PinnedDrop for BalancedFuture {
        fn drop(this: Pin<&mut Self>) {
            if let BalancedFutureProj::Waiting { shared, parked: true, .. } = this.project() {
                // This caller may hold the balancer's wake-up registration: hand it on.
                wake_all(&mut lock(shared).waiters);
            }
        }
    }
}

/// Endpoint changes for the balancer, fed by a background resolver task.
#[derive(Debug)]
pub struct EndpointStream {
    rx: mpsc::Receiver<Change<SocketAddr, Endpoint>>,
}

/// Errors building a balanced channel.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// A static endpoint list was empty.
    #[error("no endpoints configured")]
    NoEndpoints,
    /// An endpoint address did not make a valid URI.
    #[error("invalid endpoint {addr}: {source}")]
    InvalidEndpoint {
        /// The address.
        addr: SocketAddr,
        /// Why tonic refused it.
        source: tonic::transport::Error,
    },
}

// === impl EndpointStream ===

impl Stream for EndpointStream {
    type Item = Result<Change<SocketAddr, Endpoint>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|change| change.map(Ok))
    }
}

/// A p2c-balanced, cloneable service over `endpoints`; spawns the resolver and balancer tasks,
/// which stop when every clone is dropped.
pub fn balanced(endpoints: Endpoints, config: EndpointConfig) -> Result<Balanced, BalanceError> {
    if let Endpoints::Static(addrs) = &endpoints {
        let first = addrs.first().ok_or(BalanceError::NoEndpoints)?;
        make_channel(*first, &config)?;
    }
    let (tx, rx) = mpsc::channel(64);
    let ejection = Arc::new(EjectionPool::default());
    tokio::spawn(resolve(endpoints, config, ejection.clone(), tx));
    let balancer = Balance::new(EndpointStream { rx });
    Ok(Balanced {
        shared: Arc::new(Mutex::new(Shared {
            balancer,
            waiters: Vec::new(),
        })),
        ejection,
    })
}

// === impl Balanced ===

impl Balanced {
    /// How many endpoints are ejected right now.
    pub fn ejected(&self) -> usize {
        self.ejection.ejected()
    }
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced").finish_non_exhaustive()
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wake_all(waiters: &mut Vec<Waker>) {
    for waker in waiters.drain(..) {
        waker.wake();
    }
}

impl Service<http::Request<Body>> for Balanced {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BalancedFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is awaited in the future, under the lock, right before dispatch.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        BalancedFuture::Waiting {
            request: Some(request),
            shared: self.shared.clone(),
            parked: false,
        }
    }
}

impl Future for BalancedFuture {
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let future = match self.as_mut().project() {
                BalancedFutureProj::Called { future } => return future.poll(cx),
                BalancedFutureProj::Waiting {
                    request,
                    shared,
                    parked,
                } => {
                    let mut guard = lock(shared);
                    let state = &mut *guard;
                    match state.balancer.poll_ready(cx) {
                        Poll::Pending => {
                            if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                                state.waiters.push(cx.waker().clone());
                            }
                            *parked = true;
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(error)) => {
                            *parked = false;
                            wake_all(&mut state.waiters);
                            return Poll::Ready(Err(error));
                        }
                        Poll::Ready(Ok(())) => {
                            let Some(request) = request.take() else {
                                return Poll::Ready(Err("polled after completion".into()));
                            };
                            let future = state.balancer.call(request);
                            if *parked {
                                *parked = false;
                                state.waiters.retain(|w| !w.will_wake(cx.waker()));
                            }
                            if !state.waiters.is_empty() {
                                // They parked while this caller held the registration.
                                wake_all(&mut state.waiters);
                            }
                            future
                        }
                    }
                }
            };
            self.set(BalancedFuture::Called { future });
        }
    }
}

/// A plain channel to one endpoint, with `config`'s connection settings; what [`connect`] uses
/// for a static list of exactly one address, where there is nothing to balance over and nothing
/// to eject (ejection never removes the last endpoint).
///
/// [`connect`]: crate::client::connect
pub fn direct(addr: SocketAddr, config: &EndpointConfig) -> Result<Channel, BalanceError> {
    make_channel(addr, config)
}

fn make_channel(addr: SocketAddr, config: &EndpointConfig) -> Result<Channel, BalanceError> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| BalanceError::InvalidEndpoint { addr, source })?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive)
        .keep_alive_timeout(config.keepalive)
        .keep_alive_while_idle(true)
        .buffer_size(config.buffer_size.max(1));
    if let Some(timeout) = config.attempt_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    Ok(match &config.tls {
        Some(connector) => endpoint.connect_with_connector_lazy(connector.clone()),
        None => endpoint.connect_lazy(),
    })
}

/// Keeps the balancer's endpoint set equal to the resolved addresses until the balancer is gone.
async fn resolve(
    endpoints: Endpoints,
    config: EndpointConfig,
    pool: Arc<EjectionPool>,
    tx: mpsc::Sender<Change<SocketAddr, Endpoint>>,
) {
    let mut current = HashSet::new();
    loop {
        match lookup(&endpoints).await {
            Ok(addrs) if !addrs.is_empty() => {
                let update = Update {
                    config: &config,
                    pool: &pool,
                    tx: &tx,
                };
                if update.apply(&mut current, addrs).await.is_err() {
                    return;
                }
            }
            Ok(_) => tracing::warn!(?endpoints, "resolved no endpoints; keeping the old set"),
            Err(error) => {
                tracing::warn!(?endpoints, %error, "resolution failed; keeping the old set");
            }
        }
        let refresh = match &endpoints {
            Endpoints::Static(_) => return tx.closed().await,
            Endpoints::Dns { refresh, .. } => *refresh,
        };
        tokio::select! {
            () = tokio::time::sleep(refresh) => {}
            () = tx.closed() => return,
        }
    }
}

async fn lookup(endpoints: &Endpoints) -> std::io::Result<HashSet<SocketAddr>> {
    match endpoints {
        Endpoints::Static(addrs) => Ok(addrs.iter().copied().collect()),
        Endpoints::Dns { host, port, .. } => Ok(tokio::net::lookup_host((host.as_str(), *port))
            .await?
            .collect()),
    }
}

struct Update<'a> {
    config: &'a EndpointConfig,
    pool: &'a Arc<EjectionPool>,
    tx: &'a mpsc::Sender<Change<SocketAddr, Endpoint>>,
}

impl Update<'_> {
    /// Sends removals and insertions; `Err` once the balancer is gone.
    async fn apply(
        &self,
        current: &mut HashSet<SocketAddr>,
        next: HashSet<SocketAddr>,
    ) -> Result<(), ()> {
        for gone in current.difference(&next) {
            tracing::info!(endpoint = %gone, "endpoint removed");
            self.tx.send(Change::Remove(*gone)).await.map_err(drop)?;
        }
        for new in next.difference(current) {
            let channel = match make_channel(*new, self.config) {
                Ok(channel) => channel,
                Err(error) => {
                    tracing::warn!(%error, "skipping endpoint");
                    continue;
                }
            };
            let eject = Eject::new(channel, *new, self.config.eject.clone(), self.pool.clone());
            let endpoint = PendingRequests::new(eject, CompleteOnResponse::default());
            tracing::info!(endpoint = %new, "endpoint added");
            self.tx
                .send(Change::Insert(*new, endpoint))
                .await
                .map_err(drop)?;
        }
        *current = next;
        Ok(())
    }
}
