//! Durable saga orchestration on Postgres.
//!
//! A saga is a sequence of steps, each with an action and (optionally) a compensation that
//! undoes it. A run is started with [`start`] inside the transaction of the business change
//! that implies it (so it exists iff that change committed); [`Worker`]s then run its steps in
//! order, recording progress and the saga's data after each one. When an action fails for good
//! (or keeps failing transiently past [`RetryPolicy::max_attempts`]), the completed steps are
//! compensated in reverse and the run ends `compensated`; compensations are retried until they
//! succeed, and one that fails for good leaves the run `stuck` for an operator.
//!
//! Every action and compensation receives an idempotency key (`<run id>:<step>`, with
//! `:compensate` for compensations): after a crash the step in flight runs again with the same
//! key, so the remote side must apply a key once. Several workers share the runs of a kind
//! without running one twice at a time (leases taken with `FOR UPDATE SKIP LOCKED`); see
//! [`worker`].
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
//! Worker::new(pool, saga, WorkerConfig::default()).run(stop).await?;
//! ```

mod definition;
mod error;
pub mod fence;
pub mod metrics;
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
