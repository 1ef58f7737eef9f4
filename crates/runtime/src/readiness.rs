//! Readiness that follows the real state of a service's dependencies.
//!
//! Checks (database, NATS, ...) run on an interval; the result drives grpc.health.v1 (the
//! overall `""` entry and every registered service name) and the admin `/readyz` endpoint.
//! Once shutdown starts, the service reports NOT_SERVING whatever the checks say.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::future::{BoxFuture, join_all};
use tonic_health::{ServingStatus, server::HealthReporter};

pub use shop_readiness::ReadinessCheck;

/// Shared readiness state of one service process.
pub struct Readiness {
    ready: AtomicBool,
    shutting_down: AtomicBool,
    checks: Vec<Arc<dyn ReadinessCheck>>,
    reporter: HealthReporter,
    service_names: Vec<String>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.is_ready())
            .field("shutting_down", &self.shutting_down.load(Ordering::Relaxed))
            .field("services", &self.service_names)
            .finish_non_exhaustive()
    }
}

impl Readiness {
    pub(crate) fn new(
        checks: Vec<Arc<dyn ReadinessCheck>>,
        reporter: HealthReporter,
        service_names: Vec<String>,
    ) -> Self {
        Self {
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            checks,
            reporter,
            service_names,
        }
    }

    /// Whether the last round of checks passed and shutdown has not begun.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutting_down.load(Ordering::Acquire)
    }

    /// Runs every check once (each bounded by `timeout`) and publishes the result.
    pub(crate) async fn refresh(&self, timeout: Duration) {
        let results = join_all(self.checks.iter().map(|check| async move {
            match tokio::time::timeout(timeout, check.check()).await {
                Ok(Ok(())) => None,
                Ok(Err(reason)) => Some(format!("{}: {reason}", check.name())),
                Err(_) => Some(format!("{}: no answer within {timeout:?}", check.name())),
            }
        }))
        .await;
        let failures: Vec<String> = results.into_iter().flatten().collect();
        let now_ready = failures.is_empty();
        let was_ready = self.ready.swap(now_ready, Ordering::AcqRel);
        if now_ready != was_ready {
            if now_ready {
                tracing::info!("dependencies ready");
            } else {
                tracing::warn!(failures = ?failures, "dependencies not ready");
            }
        }
        self.publish().await;
    }

    /// Marks the service as leaving: NOT_SERVING from now on.
    pub(crate) async fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.publish().await;
    }

    async fn publish(&self) {
        let status = if self.is_ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        for name in &self.service_names {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Re-runs the checks every `interval` until `stop` is cancelled.
    pub(crate) async fn run(
        self: Arc<Self>,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let timeout = interval.max(Duration::from_secs(1));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => self.refresh(timeout).await,
            }
        }
    }
}

/// A readiness check from a name and an async closure.
pub struct FnReadiness<F> {
    name: String,
    check: F,
}

impl<F, Fut> FnReadiness<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    /// A check named `name` that passes while `check` returns `Ok`.
    pub fn new(name: impl Into<String>, check: F) -> Self {
        Self {
            name: name.into(),
            check,
        }
    }
}

impl<F, Fut> ReadinessCheck for FnReadiness<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin((self.check)())
    }
}
