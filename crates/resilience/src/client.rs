//! The client stack: one resilient, cloneable channel per dependency.
//!
//! ```ignore
//! let cfg = DependencyConfig::new("catalog", Endpoints::Static(vec![addr]));
//! let client = CatalogServiceClient::new(shop_resilience::client::connect(&cfg).await?);
//! ```
//!
//! Order, outermost first, and why:
//! 1. **caller id**: stamps `x-caller-id` so the server's per-caller rate limit can key on it.
//! 2. [`ClientDeadline`](crate::deadline::ClientDeadline): fixes the call's deadline once (own
//!    timeout, the inbound call's remaining budget, or one set on the request) and enforces it
//!    across every attempt and backoff.
//! 3. [`Retry`](crate::retry::Retry): idempotent calls only, within the budget and the
//!    deadline; each attempt re-stamps `grpc-timeout` with the time left.
//! 4. [`Bulkhead`](crate::bulkhead::Bulkhead): every attempt takes a slot, backoff sleeps do
//!    not; its rejections are local and never retried.
//! 5. [`CircuitBreaker`](crate::breaker::CircuitBreaker): sees every attempt (retries are real
//!    load on the dependency); inside the bulkhead so bulkhead rejections never count as
//!    dependency failures, and an open breaker releases its bulkhead slot at once.
//! 6. [`balance`](crate::balance): p2c over endpoints with outlier ejection and a per-attempt
//!    timeout in each endpoint's channel.

use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::BoxError;
use crate::balance::{self, BalanceError, EndpointConfig, Endpoints};
use crate::breaker::{BreakerConfig, BreakerHandle, CircuitBreakerLayer};
use crate::bulkhead::{BulkheadConfig, BulkheadLayer};
use crate::deadline::ClientDeadlineLayer;
use crate::rate_limit::CALLER_HEADER;
use crate::retry::{RetryConfig, RetryLayer};

/// Everything that shapes calls to one dependency.
#[derive(Debug, Clone, PartialEq)]
pub struct DependencyConfig {
    /// Dependency name, used in logs and breaker metrics (e.g. `catalog`).
    pub name: String,
    /// Name of the calling service, sent as `x-caller-id`.
    pub caller: Option<String>,
    /// Where the endpoints are.
    pub endpoints: Endpoints,
    /// Default deadline of a call, when no shorter one propagates.
    pub timeout: Option<Duration>,
    /// Per-endpoint connection settings and ejection.
    pub endpoint: EndpointConfig,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Circuit breaker thresholds.
    pub breaker: BreakerConfig,
    /// Bulkhead limits.
    pub bulkhead: BulkheadConfig,
}

/// Errors building a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration is inconsistent.
    #[error("invalid config for dependency {name}: {reason}")]
    Invalid {
        /// The dependency.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The balancer could not be built.
    #[error(transparent)]
    Balance(#[from] BalanceError),
}

/// A resilient channel to one dependency; hand it to a generated tonic client.
#[derive(Debug, Clone)]
pub struct ResilientChannel {
    inner: BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>,
    breaker: BreakerHandle,
    /// The balancer's view of ejections; `None` without a balancer.
    balanced: Option<balance::Balanced>,
}

// === impl DependencyConfig ===

impl DependencyConfig {
    /// Defaults for dependency `name` at `endpoints`.
    pub fn new(name: impl Into<String>, endpoints: Endpoints) -> Self {
        Self {
            name: name.into(),
            caller: None,
            endpoints,
            timeout: Some(Duration::from_secs(2)),
            endpoint: EndpointConfig::default(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            bulkhead: BulkheadConfig::default(),
        }
    }

    /// Checks values that would make the stack misbehave.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |reason| {
            Err(ClientError::Invalid {
                name: self.name.clone(),
                reason,
            })
        };
        let b = &self.breaker;
        if !(0.0..=1.0).contains(&b.failure_rate) || b.min_calls == 0 {
            return invalid("breaker failure_rate must be in 0..=1 and min_calls > 0");
        }
        if b.half_open_probes == 0 || b.close_after == 0 || b.consecutive_failures == 0 {
            return invalid("breaker probes, close_after and consecutive_failures must be > 0");
        }
        if self.bulkhead.max_concurrent == 0 {
            return invalid("bulkhead max_concurrent must be > 0");
        }
        if self.retry.max_attempts == 0 {
            return invalid("retry max_attempts must be > 0 (1 disables retries)");
        }
        if matches!(&self.endpoints, Endpoints::Static(addrs) if addrs.is_empty()) {
            return invalid("no endpoints");
        }
        Ok(())
    }
}

/// Connects to the dependency described by `config`: the full client stack over p2c-balanced
/// endpoints. Connections are made lazily; the call returns at once.
///
/// A static list of exactly one address skips the balancer: with one endpoint there is no
/// choice to make and ejection never removes the last endpoint, so the stack goes straight to
/// that endpoint's channel ([`balance::direct`]). DNS names always get the balancer, however
/// many addresses they resolve to now.
pub async fn connect(config: &DependencyConfig) -> Result<ResilientChannel, ClientError> {
    config.validate()?;
    let mut endpoint = config.endpoint.clone();
    endpoint.buffer_size = endpoint.buffer_size.max(config.bulkhead.max_concurrent);
    match &config.endpoints {
        Endpoints::Static(addrs) if addrs.len() == 1 => {
            let channel = balance::direct(addrs[0], &endpoint)?;
            Ok(ResilientChannel::new(config, channel))
        }
        endpoints => {
            let balanced = balance::balanced(endpoints.clone(), endpoint)?;
            let mut channel = ResilientChannel::new(config, balanced.clone());
            channel.balanced = Some(balanced);
            Ok(channel)
        }
    }
}

// === impl ResilientChannel ===

impl ResilientChannel {
    /// The client stack for `config` over any transport (a balancer, a plain
    /// `tonic::transport::Channel`, or a test double).
    pub fn new<S>(config: &DependencyConfig, transport: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>>,
        S: Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let breaker = CircuitBreakerLayer::new(config.name.as_str(), config.breaker.clone());
        let handle = breaker.handle();
        let caller = config
            .caller
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
            .map(|value| (HeaderName::from_static(CALLER_HEADER), value));
        let stack = ServiceBuilder::new()
            .map_request(move |mut req: http::Request<Body>| {
                if let Some((name, value)) = &caller {
                    req.headers_mut().insert(name.clone(), value.clone());
                }
                req
            })
            .layer(ClientDeadlineLayer::new(config.timeout))
            .layer(RetryLayer::new(config.retry.clone()))
            .layer(BulkheadLayer::new(config.bulkhead.clone()))
            .layer(breaker)
            .service(transport.map_err(Into::into));
        Self {
            inner: BoxCloneSyncService::new(stack),
            breaker: handle,
            balanced: None,
        }
    }

    /// Puts `layer` outside the whole stack (e.g. tracing and metrics that should see a call
    /// once, however many attempts it takes).
    #[must_use]
    pub fn wrap<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>>,
        L::Service: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
    {
        self.inner = BoxCloneSyncService::new(layer.layer(self.inner));
        self
    }

    /// This dependency's circuit breaker state, for metrics and status pages.
    pub fn breaker(&self) -> &BreakerHandle {
        &self.breaker
    }

    /// Endpoints ejected right now for failing (always 0 without a balancer).
    pub fn ejected_endpoints(&self) -> usize {
        self.balanced.as_ref().map_or(0, balance::Balanced::ejected)
    }
}

impl Service<http::Request<Body>> for ResilientChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future =
        <BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError> as Service<
            http::Request<Body>,
        >>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.inner.call(req)
    }
}
