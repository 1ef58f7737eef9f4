//! Durable saga orchestration on Postgres.
//!
//! A saga is a sequence of steps, each with an action and (optionally) a compensation that
//! undoes it. A run is started with [`start`] inside the transaction of the business change
//! that implies it (so it exists iff that change committed); [`Worker`]s then run its steps in
//! order, recording progress, the saga's data and a history row after each attempt.
//!
//! What a step's error means decides what is undone ([`StepError`]):
//!
//! - `Failed` (definitely not applied: declined, out of stock): the steps completed before it
//!   are compensated in reverse and the run ends `compensated`.
//! - `Transient` (outcome unknown: deadline, transport error, unavailable), or a step that
//!   exceeds [`WorkerConfig::step_timeout`]: retried with the same idempotency key up to
//!   [`RetryPolicy::max_attempts`]; if still in doubt, the step itself is compensated too,
//!   then the completed ones.
//!
//! [`Saga::compensation`] adds a step with only a compensation: added first, it ends every
//! compensated run (cancel the order with [`StepInput::failure`] as the reason).
//!
//! Compensations are retried with capped exponential backoff until they succeed; one that fails
//! for good, or a run whose stored state cannot be read, is parked `stuck` with its error for an
//! operator ([`store::stuck`], [`store::retry_stuck`]), never retried in a hot loop.
//!
//! Every action and compensation receives an idempotency key (`<run id>:<step>`, with
//! `:compensate` for compensations): after a crash the step in flight runs again with the same
//! key, so the remote side must apply a key once, and a compensation must be harmless when its
//! action never happened. Several workers share the runs of a kind without running one twice at
//! a time: each claim is a lease with a fencing token (the run's `lease_epoch`, handed to the
//! step as [`StepInput::fence`]) that guards every write, so a worker that stalled past its
//! lease records nothing; see [`worker`] and [`fence`].
//!
//! The operator's view: [`store::counts`] (runs per status), [`store::stuck`],
//! [`store::timeline`] (every attempt: step, phase, outcome, error, start and end) and
//! [`SagaMetrics`] (`shop_saga_runs`, `shop_saga_steps_total`,
//! `shop_saga_step_duration_seconds`).
//!
//! ```ignore
//! let saga = Saga::new("order")
//!     .compensated_step("reserve", reserve, release)
//!     .compensated_step("authorize", authorize, void)
//!     .step("confirm", confirm);
//! let mut tx = pool.begin().await?;
//! /* insert the order */
//! shop_saga::start(&mut tx, "order", order_id, &OrderSaga { .. }).await?;
//! tx.commit().await?;
//! Worker::try_new(pool, saga, WorkerConfig::default())?
//!     .with_metrics(saga_metrics)
//!     .run(stop)
//!     .await?;
//! ```

mod definition;
mod error;
pub mod fence;
pub mod metrics;
mod progress;
pub mod store;
pub mod worker;

pub use definition::{RetryPolicy, Saga, StepError, StepFuture, StepInput};
pub use error::SagaError;
pub use fence::Fence;
pub use metrics::SagaMetrics;
pub use store::{
    MIGRATOR, NOTIFY_CHANNEL, Outcome, Phase, Run, RunStatus, StepRecord, StuckRun, get, migrate,
    start,
};
pub use worker::{Worker, WorkerConfig};
