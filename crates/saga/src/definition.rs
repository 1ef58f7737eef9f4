//! What a saga is: named steps, each with an action and an optional compensation, and how
//! failed attempts are retried.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use uuid::Uuid;

use crate::{Fence, SagaError};

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
    /// Why the saga is compensating (`"<step>: failed: <reason>"`, `"<step>: transient: …"`,
    /// `"<step>: timeout: …"`), for compensations; `None` for actions.
    pub failure: Option<String>,
    /// This claim's fence: a step that writes to the saga's own database calls
    /// [`Fence::hold`] first, inside its transaction, so that its write commits only while
    /// this worker still holds the run.
    pub fence: Fence,
}

/// Why a step did not complete, and what the saga does about it.
///
/// The variant is a statement about the remote side, not about how the call failed:
///
/// - [`Transient`](Self::Transient): the outcome is **unknown** or the dependency is
///   unavailable (a deadline passed, the connection dropped, UNAVAILABLE, the breaker is open).
///   The remote side may have applied the call. An action is retried with the same idempotency
///   key up to [`RetryPolicy::max_attempts`]; if it is still in doubt then, the saga
///   compensates **including this step** (its compensation runs, so it must be idempotent and
///   harmless when the action never happened: void an authorization that does not exist,
///   release a reservation that was never made). A step that exceeds
///   [`WorkerConfig::step_timeout`](crate::WorkerConfig::step_timeout) counts the same way.
///   A compensation is retried with capped exponential backoff until it succeeds.
/// - [`Failed`](Self::Failed): the call was **definitely not applied** and will not be however
///   often it is tried (card declined, out of stock, validation refused). An action's failure
///   makes the saga compensate the steps completed **before** it (this one is not compensated);
///   a compensation's failure parks the run as `stuck` for an operator
///   ([`store::retry_stuck`](crate::store::retry_stuck) puts it back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Outcome unknown or worth trying again later; see the type's docs.
    #[error("transient: {0}")]
    Transient(String),
    /// Definitely not applied, and never will be; see the type's docs.
    #[error("failed: {0}")]
    Failed(String),
}

/// The future a step returns: the saga's data for the next step.
pub type StepFuture<D> = BoxFuture<'static, Result<D, StepError>>;

pub(crate) type StepFn<D> = Arc<dyn Fn(StepInput<D>) -> StepFuture<D> + Send + Sync>;

/// One step of a saga.
pub struct Step<D> {
    pub(crate) name: &'static str,
    /// `None` for a compensation-only step ([`Saga::compensation`]).
    pub(crate) action: Option<StepFn<D>>,
    pub(crate) compensation: Option<StepFn<D>>,
}

/// Backoff between failed attempts: an exponential, capped, with "equal jitter" (a wait is
/// drawn from the upper half of the exponential, so it is never shorter than half of it: a run
/// whose attempts keep failing is retried at most about once per `max_backoff / 2`, never in a
/// hot loop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts of an action before the saga compensates (at least 1; 0 counts as 1).
    /// Compensations are retried without limit.
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
        Duration::from_nanos(fastrand::u64(nanos / 2..=nanos))
    }
}

// === impl StepError ===

impl From<SagaError> for StepError {
    /// So that a step can `?` [`Fence::hold`] and its own database calls: a lost lease or a
    /// database error is transient (the worker's next write is fenced anyway, so a worker that
    /// lost the run records nothing); corrupt data is a failure.
    fn from(error: SagaError) -> Self {
        match error {
            SagaError::LeaseLost | SagaError::Database(_) => Self::Transient(error.to_string()),
            SagaError::Data(_) | SagaError::Corrupt(_) | SagaError::InvalidConfig(_) => {
                Self::Failed(error.to_string())
            }
        }
    }
}

impl From<sqlx::Error> for StepError {
    /// So that a step can `?` its own database calls: transient (retried, then compensated).
    fn from(error: sqlx::Error) -> Self {
        Self::from(SagaError::Database(error))
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
            action: Some(Arc::new(action)),
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
            action: Some(Arc::new(action)),
            compensation: Some(Arc::new(compensation)),
        });
        self
    }

    /// Adds a step with no action, only a compensation: going forward nothing happens (no call,
    /// no write); when the saga compensates, it runs in its place in the reverse order. Added
    /// first, it runs last in every compensated run — whichever step failed, even the first —
    /// which is where to end the business side (cancel the order with
    /// [`StepInput::failure`] as the reason).
    #[must_use]
    pub fn compensation<C>(mut self, name: &'static str, compensation: C) -> Self
    where
        C: Fn(StepInput<D>) -> StepFuture<D> + Send + Sync + 'static,
    {
        self.steps.push(Step {
            name,
            action: None,
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
        for _ in 0..100 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(5) && first <= Duration::from_millis(10));
            let third = policy.backoff(3);
            assert!(third >= Duration::from_millis(20) && third <= Duration::from_millis(40));
            let late = policy.backoff(40);
            assert!(late >= policy.max_backoff / 2 && late <= policy.max_backoff);
        }
    }
}
