//! Readiness that follows the real state of a service's dependencies.
//!
//! Checks (database, NATS, ...) run on an interval. Each is registered with a [`CheckRole`]:
//! a check that [gates](CheckRole::Gates) traffic is one the RPCs cannot work without (the
//! database), and its failure turns grpc.health.v1 (the overall `""` entry and every
//! registered service name) NOT_SERVING and `/readyz` 503, so load balancers route elsewhere.
//! A check that only [reports](CheckRole::Reports) is a dependency the service keeps serving
//! without (NATS behind an outbox: events wait in the database): its failure is logged, shown
//! in `/readyz` detail and in `shop_dependency_up`, and nothing else. Taking a service out of
//! traffic for a dependency its RPCs do not need would turn a NATS outage into an outage of
//! every service that publishes.
//!
//! Once shutdown starts, the service reports NOT_SERVING whatever the checks say.

use std::{
    fmt::Write as _,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::future::{BoxFuture, join_all};
use prometheus_client::{encoding::EncodeLabelSet, metrics::family::Family, metrics::gauge::Gauge};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::metrics::Metrics;

pub use shop_readiness::ReadinessCheck;

/// What a failing check does to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckRole {
    /// The RPCs need it: while it fails, health is NOT_SERVING and `/readyz` answers 503.
    Gates,
    /// The service serves without it: a failure shows in `/readyz` detail, metrics and logs,
    /// and health stays SERVING.
    Reports,
}

impl CheckRole {
    fn label(self) -> &'static str {
        match self {
            Self::Gates => "true",
            Self::Reports => "false",
        }
    }
}

/// Labels of `shop_dependency_up`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    /// The check's name, e.g. `nats`.
    dependency: String,
    /// `true` when the check gates traffic, `false` when it only reports.
    gates_traffic: String,
}

/// One registered check and what its last run found.
struct Registered {
    check: Arc<dyn ReadinessCheck>,
    role: CheckRole,
    /// `None` until the check has run once.
    last: Mutex<Option<Result<(), String>>>,
    up: Gauge,
}

/// The last result of one check, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckStatus {
    /// The check's name.
    pub name: String,
    /// Whether its failure gates traffic.
    pub role: CheckRole,
    /// `None` before the first run; else the last result.
    pub result: Option<Result<(), String>>,
}

/// Shared readiness state of one service process.
pub struct Readiness {
    ready: AtomicBool,
    shutting_down: AtomicBool,
    checks: Vec<Registered>,
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
        checks: Vec<(Arc<dyn ReadinessCheck>, CheckRole)>,
        reporter: HealthReporter,
        service_names: Vec<String>,
        metrics: &Metrics,
    ) -> Self {
        let family = Family::<DependencyLabels, Gauge>::default();
        metrics.with_registry(|registry| {
            registry.register(
                "dependency_up",
                "Last readiness check of each dependency: 1 up, 0 down; gates_traffic says \
                 whether a failure takes the service out of traffic",
                family.clone(),
            );
        });
        let checks = checks
            .into_iter()
            .map(|(check, role)| Registered {
                up: family
                    .get_or_create(&DependencyLabels {
                        dependency: check.name().to_owned(),
                        gates_traffic: role.label().to_owned(),
                    })
                    .clone(),
                check,
                role,
                last: Mutex::new(None),
            })
            .collect();
        Self {
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            checks,
            reporter,
            service_names,
        }
    }

    /// Whether the last round of gating checks passed and shutdown has not begun.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.shutting_down.load(Ordering::Acquire)
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// The last result of every check, in registration order.
    pub fn statuses(&self) -> Vec<CheckStatus> {
        self.checks
            .iter()
            .map(|registered| CheckStatus {
                name: registered.check.name().to_owned(),
                role: registered.role,
                result: registered
                    .last
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            })
            .collect()
    }

    /// `/readyz` body: the verdict on the first line, then one line per check
    /// (`[+]` up, `[-]` down, `[?]` not run yet), saying which ones only report.
    pub fn detail(&self) -> String {
        let mut out = String::from(if self.is_ready() {
            "ready\n"
        } else {
            "not ready\n"
        });
        if self.is_shutting_down() {
            out.push_str("shutting down\n");
        }
        for status in self.statuses() {
            let role = match status.role {
                CheckRole::Gates => "",
                CheckRole::Reports => " (reported only, does not gate traffic)",
            };
            let _ = match &status.result {
                Some(Ok(())) => writeln!(out, "[+]{} ok{role}", status.name),
                Some(Err(reason)) => writeln!(out, "[-]{} down{role}: {reason}", status.name),
                None => writeln!(out, "[?]{} not checked yet{role}", status.name),
            };
        }
        out
    }

    /// Runs every check once (each bounded by `timeout`) and publishes the result.
    pub(crate) async fn refresh(&self, timeout: Duration) {
        let results = join_all(self.checks.iter().map(|registered| async move {
            let check = &registered.check;
            match tokio::time::timeout(timeout, check.check()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            }
        }))
        .await;
        let mut gates_pass = true;
        for (registered, result) in self.checks.iter().zip(results) {
            gates_pass &= registered.role == CheckRole::Reports || result.is_ok();
            registered.up.set(i64::from(result.is_ok()));
            let previous = registered
                .last
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .replace(result.clone());
            log_change(registered, previous.as_ref(), &result);
        }
        let was_ready = self.ready.swap(gates_pass, Ordering::AcqRel);
        if gates_pass != was_ready {
            if gates_pass {
                tracing::info!("dependencies ready: SERVING");
            } else {
                tracing::warn!("a dependency that gates traffic is down: NOT_SERVING");
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

/// Logs a check going down or coming back (not every failed round).
fn log_change(
    registered: &Registered,
    previous: Option<&Result<(), String>>,
    now: &Result<(), String>,
) {
    let name = registered.check.name();
    let gates = registered.role == CheckRole::Gates;
    match (previous, now) {
        (Some(Ok(())) | None, Err(reason)) => {
            tracing::warn!(dependency = name, gates_traffic = gates, %reason, "dependency down");
        }
        (Some(Err(_)), Ok(())) => {
            tracing::info!(dependency = name, gates_traffic = gates, "dependency back");
        }
        _ => {}
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn switch(name: &'static str, up: &Arc<AtomicBool>) -> Arc<dyn ReadinessCheck> {
        let up = Arc::clone(up);
        Arc::new(FnReadiness::new(name, move || {
            let ok = up.load(Ordering::SeqCst);
            async move { if ok { Ok(()) } else { Err("off".into()) } }
        }))
    }

    #[tokio::test]
    async fn only_gating_checks_decide_readiness_and_every_check_is_reported() {
        let db = Arc::new(AtomicBool::new(true));
        let bus = Arc::new(AtomicBool::new(true));
        let (reporter, _service) = tonic_health::server::health_reporter();
        let metrics = Metrics::new();
        let readiness = Readiness::new(
            vec![
                (switch("db", &db), CheckRole::Gates),
                (switch("bus", &bus), CheckRole::Reports),
            ],
            reporter,
            vec![],
            &metrics,
        );
        assert!(readiness.detail().contains("[?]db not checked yet"));
        readiness.refresh(Duration::from_secs(1)).await;
        assert!(readiness.is_ready());

        bus.store(false, Ordering::SeqCst);
        readiness.refresh(Duration::from_secs(1)).await;
        assert!(readiness.is_ready(), "a reporting check must not gate");
        let detail = readiness.detail();
        assert!(detail.starts_with("ready\n"), "{detail}");
        assert!(detail.contains("[+]db ok\n"), "{detail}");
        assert!(
            detail.contains("[-]bus down (reported only, does not gate traffic): off"),
            "{detail}"
        );
        let text = metrics.render().unwrap_or_default();
        assert!(
            text.contains(r#"shop_dependency_up{dependency="bus",gates_traffic="false"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"shop_dependency_up{dependency="db",gates_traffic="true"} 1"#),
            "{text}"
        );

        db.store(false, Ordering::SeqCst);
        readiness.refresh(Duration::from_secs(1)).await;
        assert!(!readiness.is_ready(), "a gating check must gate");
        assert!(readiness.detail().starts_with("not ready\n"));
    }
}
