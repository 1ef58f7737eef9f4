//! The server protection stack, for `tonic::transport::Server::builder().layer(..)`.
//!
//! Order, outermost first, and why:
//! 1. [`ServerDeadline`]: reads `grpc-timeout` first so everything below, handlers included,
//!    sees the caller's deadline ([`crate::deadline::current`]).
//! 2. [`RateLimit`]: a caller over its quota is turned away before it can take a concurrency
//!    slot from well-behaved callers.
//! 3. [`Shed`]: global concurrency limit; excess calls get `RESOURCE_EXHAUSTED` at once
//!    instead of queueing without bound.

use tower::Layer;

use crate::deadline::{ServerDeadline, ServerDeadlineLayer};
use crate::rate_limit::{RateLimit, RateLimitConfig, RateLimitLayer};
use crate::shed::{Shed, ShedLayer};

/// Calls served at once across all connections unless configured otherwise (the one place this
/// default is written).
pub const DEFAULT_MAX_CONCURRENT: usize = 256;

/// Server protection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Calls served at once across all connections; the rest are shed.
    pub max_concurrent: usize,
    /// Per-caller quota; `None` disables rate limiting.
    pub rate_limit: Option<RateLimitConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            rate_limit: Some(RateLimitConfig::default()),
        }
    }
}

/// The composed server protection layer (see the module docs for the order).
#[derive(Debug, Clone)]
pub struct ServerLayer {
    rate_limit: Option<RateLimitLayer>,
    shed: ShedLayer,
}

/// A service behind [`ServerLayer`].
pub type Protected<S> = ServerDeadline<tower::util::Either<RateLimit<Shed<S>>, Shed<S>>>;

// === impl ServerLayer ===

impl ServerLayer {
    /// The stack for `config`.
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            rate_limit: config.rate_limit.clone().map(RateLimitLayer::new),
            shed: ShedLayer::new(config.max_concurrent),
        }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = Protected<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let shed = self.shed.layer(inner);
        let limited = match &self.rate_limit {
            Some(rate_limit) => tower::util::Either::Left(rate_limit.layer(shed)),
            None => tower::util::Either::Right(shed),
        };
        ServerDeadlineLayer.layer(limited)
    }
}
