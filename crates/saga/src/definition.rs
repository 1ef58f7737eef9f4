//! What a saga is: named steps, each with an action and an optional compensation, and how
//! failed attempts are retried.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use uuid::Uuid;

/// What a step's action or compensation receives.
#[derive(Debug, Clone)]
pub struct StepInput<D> {
    /// The saga run.
    pub saga_id: Uuid,
    /// `<saga_id>:<step>` for actions, `<saga_id>:<step>:compensate` for compensations: pass
    /// it to the remote call so a repeated attempt (after a crash or a lost answer) is applied
    /// once.
    pub idempotency_key: String,
    /// 1 for the first attempt of this step.
    pub attempt: u32,
    /// The saga's data as the previous step left it.
    pub data: D,
}

/// Why a step did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Worth trying again later (the dependency is unavailable, a deadline passed). Actions
    /// are retried up to [`RetryPolicy::max_attempts`], then the saga compensates;
    /// compensations are retried until they succeed.
    #[error("transient: {0}")]
    Transient(String),
    /// Will not succeed however often it is tried (out of stock, card declined). An action's
    /// failure makes the saga compensate; a compensation's leaves the run `stuck` for an
    /// operator.
    #[error("failed: {0}")]
    Failed(String),
}

/// The future a step returns: the saga's data for the next step.
pub type StepFuture<D> = BoxFuture<'static, Result<D, StepError>>;

type StepFn<D> = Arc<dyn Fn(StepInput<D>) -> StepFuture<D> + Send + Sync>;

/// One step of a saga.
pub struct Step<D> {
    pub(crate) name: &'static str,
    pub(crate) action: StepFn<D>,
    pub(crate) compensation: Option<StepFn<D>>,
}

/// Backoff between failed attempts: full jitter over an exponential, capped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts of an action before the saga compensates (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt, doubled per attempt.
    pub base_backoff: Duration,
    /// Upper bound of the backoff before jitter.
    pub max_backoff: Duration,
}

/// A saga: its kind (the `kind` column) and its steps in order.
pub struct Saga<D> {
    pub(crate) kind: &'static str,
    pub(crate) steps: Vec<Step<D>>,
    pub(crate) retry: RetryPolicy,
}

// === impl RetryPolicy ===

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(
                1u32.checked_shl(attempt.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(self.max_backoff);
        let nanos = u64::try_from(exp.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

// === impl Saga ===

impl<D> Saga<D> {
    /// A saga of `kind` with no steps yet.
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            steps: Vec::new(),
            retry: RetryPolicy::default(),
        }
    }

    /// Adds a step with no compensation (a step nothing needs to undo, or the last one).
    #[must_use]
    pub fn step<F>(mut self, name: &'static str, action: F) -> Self
    where
        F: Fn(StepInput<D>) -> StepFuture<D> + Send + Sync + 'static,
    {
        self.steps.push(Step {
            name,
            action: Arc::new(action),
            compensation: None,
        });
        self
    }

    /// Adds a step and the compensation that undoes it if a later step fails.
    #[must_use]
    pub fn compensated_step<F, C>(mut self, name: &'static str, action: F, compensation: C) -> Self
    where
        F: Fn(StepInput<D>) -> StepFuture<D> + Send + Sync + 'static,
        C: Fn(StepInput<D>) -> StepFuture<D> + Send + Sync + 'static,
    {
        self.steps.push(Step {
            name,
            action: Arc::new(action),
            compensation: Some(Arc::new(compensation)),
        });
        self
    }

    /// Sets how failed attempts are retried.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The saga's kind.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The names of its steps, in order.
    pub fn step_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.steps.iter().map(|s| s.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_full_jitter() {
        let policy = RetryPolicy::default();
        for attempt in 1..50 {
            assert!(policy.backoff(attempt) <= policy.max_backoff);
        }
        let policy = RetryPolicy {
            base_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        };
        assert!(policy.backoff(1) <= Duration::from_millis(10));
        assert!(policy.backoff(3) <= Duration::from_millis(40));
    }
}
