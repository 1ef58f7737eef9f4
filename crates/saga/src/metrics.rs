//! Prometheus metrics of saga workers. The crate picks no registry (it does not depend on the
//! service kit): a service registers them in its own, e.g.
//! `builder.metrics().with_registry(|r| saga_metrics.register(r))`, and hands them to
//! [`Worker::with_metrics`](crate::Worker::with_metrics). With shop_runtime's `shop` prefix:
//!
//! - `shop_saga_runs{kind,status}` (gauge): runs per status, refreshed by the worker every
//!   [`WorkerConfig::gauge_refresh`](crate::WorkerConfig::gauge_refresh) (one `GROUP BY` query);
//!   `status="stuck"` above 0 is the alert.
//! - `shop_saga_steps_total{kind,step,phase,outcome}` (counter): attempts of actions and
//!   compensations by how they ended (`ok`, `transient`, `failed`, `timeout`, `lease_lost`).
//! - `shop_saga_step_duration_seconds{kind,step}` (histogram): how long attempts took.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::PgPool;

use crate::SagaError;
use crate::store::{self, Outcome, Phase};

/// Labels of the runs gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// The saga kind.
    pub kind: String,
    /// The run status (`running`, `stuck`, …).
    pub status: String,
}

/// Labels of the attempts counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// The saga kind.
    pub kind: String,
    /// The step's name.
    pub step: String,
    /// `action` or `compensation`.
    pub phase: String,
    /// How the attempt ended.
    pub outcome: String,
}

/// Labels of the duration histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// The saga kind.
    pub kind: String,
    /// The step's name.
    pub step: String,
}

type DurationFamily = Family<DurationLabels, Histogram, fn() -> Histogram>;

/// The saga metrics. Cheap to clone; clones share values (one set may serve several workers
/// and kinds).
#[derive(Debug, Clone)]
pub struct SagaMetrics {
    runs: Family<RunLabels, Gauge>,
    steps: Family<StepLabels, Counter>,
    duration: DurationFamily,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~32 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for SagaMetrics {
    fn default() -> Self {
        Self {
            runs: Family::default(),
            steps: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
        }
    }
}

impl SagaMetrics {
    /// Registers `saga_runs`, `saga_steps` (a counter: `_total` is added) and
    /// `saga_step_duration_seconds`; the registry adds its prefix (`shop_saga_runs` with
    /// shop_runtime's).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "saga_runs",
            "Saga runs by kind and status (stuck above 0 needs an operator)",
            self.runs.clone(),
        );
        registry.register(
            "saga_steps",
            "Attempts of saga actions and compensations, by how they ended",
            self.steps.clone(),
        );
        registry.register(
            "saga_step_duration_seconds",
            "Duration of attempts of saga actions and compensations",
            self.duration.clone(),
        );
    }

    /// Runs of `kind` in `status` at the last refresh.
    pub fn runs(&self, kind: &str, status: &str) -> i64 {
        self.runs
            .get_or_create(&RunLabels {
                kind: kind.to_owned(),
                status: status.to_owned(),
            })
            .get()
    }

    /// Attempts counted so far of `step` of `kind` in `phase` that ended with `outcome`.
    pub fn steps(&self, kind: &str, step: &str, phase: Phase, outcome: Outcome) -> u64 {
        self.steps
            .get_or_create(&StepLabels {
                kind: kind.to_owned(),
                step: step.to_owned(),
                phase: phase.as_str().to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .get()
    }

    /// Reads the runs of `kind` per status from the database into the gauge.
    pub async fn refresh(&self, pool: &PgPool, kind: &str) -> Result<(), SagaError> {
        for (status, runs) in store::counts(pool, kind).await? {
            self.runs
                .get_or_create(&RunLabels {
                    kind: kind.to_owned(),
                    status,
                })
                .set(runs);
        }
        Ok(())
    }

    /// Counts one attempt.
    pub(crate) fn observe(
        &self,
        kind: &str,
        step: &str,
        phase: Phase,
        outcome: Outcome,
        took: std::time::Duration,
    ) {
        self.steps
            .get_or_create(&StepLabels {
                kind: kind.to_owned(),
                step: step.to_owned(),
                phase: phase.as_str().to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
        self.duration
            .get_or_create(&DurationLabels {
                kind: kind.to_owned(),
                step: step.to_owned(),
            })
            .observe(took.as_secs_f64());
    }
}
