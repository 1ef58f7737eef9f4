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
}
