//! The one trait a dependency implements to take part in a service's readiness.
//!
//! A leaf crate on purpose: libraries (`shop-events` for NATS, ...) implement
//! [`ReadinessCheck`] without depending on the service kit (`shop-runtime`), which runs the
//! checks, turns them into grpc.health.v1 and `/readyz`, and decides per check whether a
//! failure takes the service out of traffic or is only reported.

use futures::future::BoxFuture;

/// One dependency of a service, checked on an interval.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Short name used in logs, `/readyz` and metrics, e.g. `postgres`.
    fn name(&self) -> &str;
    /// `Ok` when the dependency answers; `Err` with the reason otherwise.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}
