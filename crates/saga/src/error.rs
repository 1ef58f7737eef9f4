//! Errors of the saga store and workers.

/// What can go wrong storing or driving saga runs.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// The database failed.
    #[error("saga store: {0}")]
    Database(#[from] sqlx::Error),
    /// Saga data did not (de)serialize.
    #[error("saga data: {0}")]
    Data(#[from] serde_json::Error),
    /// A stored run makes no sense (unknown status, step out of range).
    #[error("corrupt saga run: {0}")]
    Corrupt(String),
    /// The run is no longer this claim's: its lease ran out and another worker claimed it
    /// (the lease epoch moved on). Whoever gets this must not write on the run's behalf.
    #[error("saga lease lost: the run was claimed by another worker")]
    LeaseLost,
    /// A [`WorkerConfig`](crate::WorkerConfig) that cannot work (refused by
    /// [`Worker::try_new`](crate::Worker::try_new)).
    #[error("saga worker config: {0}")]
    InvalidConfig(String),
}
