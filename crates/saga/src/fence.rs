//! Fencing tokens: the lease epoch of one claim of a run.
//!
//! Every claim of a run increments its `lease_epoch`; the worker carries the epoch it got into
//! every write it makes for the run (`WHERE id = $1 AND lease_epoch = $2`) and into each step
//! as [`StepInput::fence`](crate::StepInput::fence). A worker that stalled past its lease
//! while another claimed the run holds a stale epoch, so none of its writes match: it can never
//! record progress, and a step that calls [`Fence::hold`] in its own transaction cannot commit
//! its effect either.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::SagaError;

/// The fencing token of one claim of one run. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fence {
    run_id: Uuid,
    epoch: i64,
}

impl Fence {
    pub(crate) fn new(run_id: Uuid, epoch: i64) -> Self {
        Self { run_id, epoch }
    }

    /// The run this fence guards.
    pub fn run_id(&self) -> Uuid {
        self.run_id
    }

    /// The claim's lease epoch (grows by one per claim of the run).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Locks the run's row in the caller's transaction (`SELECT … FOR UPDATE`) and checks that
    /// it is still this claim's; [`SagaError::LeaseLost`] if its epoch moved on.
    ///
    /// Call it first in the transaction of a step that writes to the saga's own database: until
    /// that transaction ends no other worker can claim the run (claims skip locked rows), so the
    /// step's write commits only while this worker holds the run. One round trip.
    pub async fn hold(&self, conn: &mut PgConnection) -> Result<(), SagaError> {
        let held = sqlx::query(
            "SELECT 1 AS held FROM saga_runs WHERE id = $1 AND lease_epoch = $2 FOR UPDATE",
        )
        .bind(self.run_id)
        .bind(self.epoch)
        .fetch_optional(conn)
        .await?;
        held.map(drop).ok_or(SagaError::LeaseLost)
    }
}
