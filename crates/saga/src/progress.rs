//! The progress writes of a worker: each recorded attempt updates its run (fenced by the lease
//! epoch) and inserts its history row in one statement, and the writes of the runs a worker
//! drives concurrently are coalesced into one such statement while the previous one is in
//! flight (no waiting: a write that finds the writer idle goes at once, alone).

use std::collections::HashSet;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::SagaError;

/// One run's write: its new state, what to do with its lease, and (usually) its history row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Progress {
    pub id: Uuid,
    pub epoch: i64,
    pub status: &'static str,
    pub step: i32,
    pub attempts: i32,
    /// The saga's data as JSON, if it changed.
    pub data: Option<String>,
    pub failure: Option<String>,
    /// The new last error (kept if `None`).
    pub last_error: Option<String>,
    /// Release the lease and come due again in this many seconds.
    pub retry_in: Option<f64>,
    /// Keep and extend the lease (else release it).
    pub keep_lease: bool,
    pub record: Option<History>,
}

/// A `saga_steps` row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct History {
    pub step: &'static str,
    pub phase: &'static str,
    pub outcome: &'static str,
    pub error: Option<String>,
    pub attempt: i32,
    /// Seconds the attempt took (its start is `now() - took`).
    pub took: f64,
}

/// A write waiting for the writer, and where its answer goes.
struct Queued {
    progress: Progress,
    done: oneshot::Sender<Result<bool, SagaError>>,
}

/// A handle on a worker's writer task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Queued>,
}

/// Writes `batch` in one statement; returns the ids whose fence matched (the others were
/// written by nobody: their claim is lost).
pub(crate) async fn execute(
    pool: &PgPool,
    lease: Duration,
    batch: &[&Progress],
) -> Result<HashSet<Uuid>, SagaError> {
    let column = |f: &dyn Fn(&Progress) -> Option<String>| -> Vec<Option<String>> {
        batch.iter().map(|p| f(p)).collect()
    };
    let history = |f: &dyn Fn(&History) -> Option<String>| -> Vec<Option<String>> {
        batch
            .iter()
            .map(|p| p.record.as_ref().and_then(f))
            .collect()
    };
    let written: Vec<Uuid> = sqlx::query_scalar(
        "WITH input AS ( \
             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::int4[], $5::int4[], \
                                  $6::text[], $7::text[], $8::text[], $9::float8[], $10::bool[], \
                                  $11::text[], $12::text[], $13::text[], $14::text[], \
                                  $15::int4[], $16::float8[]) \
                 AS i(id, epoch, status, step, attempts, data, failure, last_error, retry_in, \
                      keep_lease, h_step, h_phase, h_outcome, h_error, h_attempt, h_took)), \
         run AS ( \
             UPDATE saga_runs r SET status = i.status, step = i.step, attempts = i.attempts, \
                 data = COALESCE(i.data::jsonb, r.data), failure = i.failure, \
                 last_error = COALESCE(i.last_error, r.last_error), \
                 next_attempt_at = CASE WHEN i.retry_in IS NULL THEN r.next_attempt_at \
                                        ELSE now() + make_interval(secs => i.retry_in) END, \
                 lease_owner = CASE WHEN i.keep_lease THEN r.lease_owner END, \
                 lease_until = CASE WHEN i.keep_lease \
                                    THEN now() + make_interval(secs => $17) END, \
                 updated_at = now() \
             FROM input i WHERE r.id = i.id AND r.lease_epoch = i.epoch \
             RETURNING r.id), \
         history AS ( \
             INSERT INTO saga_steps \
                 (run_id, step, phase, outcome, error, attempt, epoch, started_at, finished_at) \
             SELECT i.id, i.h_step, i.h_phase, i.h_outcome, i.h_error, i.h_attempt, i.epoch, \
                    now() - make_interval(secs => i.h_took), now() \
             FROM input i JOIN run ON run.id = i.id WHERE i.h_step IS NOT NULL) \
         SELECT id FROM run",
    )
    .bind(batch.iter().map(|p| p.id).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.epoch).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.status).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.step).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.attempts).collect::<Vec<_>>())
    .bind(column(&|p| p.data.clone()))
    .bind(column(&|p| p.failure.clone()))
    .bind(column(&|p| p.last_error.clone()))
    .bind(batch.iter().map(|p| p.retry_in).collect::<Vec<_>>())
    .bind(batch.iter().map(|p| p.keep_lease).collect::<Vec<_>>())
    .bind(history(&|h| Some(h.step.to_owned())))
    .bind(history(&|h| Some(h.phase.to_owned())))
    .bind(history(&|h| Some(h.outcome.to_owned())))
    .bind(history(&|h| h.error.clone()))
    .bind(
        batch
            .iter()
            .map(|p| p.record.as_ref().map(|h| h.attempt))
            .collect::<Vec<_>>(),
    )
    .bind(
        batch
            .iter()
            .map(|p| p.record.as_ref().map(|h| h.took))
            .collect::<Vec<_>>(),
    )
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(written.into_iter().collect())
}

impl Writer {
    /// Starts the writer task of a worker that drives up to `batch` runs at once; it ends when
    /// every handle is dropped.
    pub(crate) fn spawn(pool: PgPool, lease: Duration, batch: usize) -> Self {
        let (queue, mut waiting) = mpsc::channel::<Queued>(batch.max(1));
        tokio::spawn(async move {
            let mut taken = Vec::with_capacity(batch.max(1));
            while waiting.recv_many(&mut taken, batch.max(1)).await > 0 {
                let writes: Vec<&Progress> = taken.iter().map(|q| &q.progress).collect();
                match execute(&pool, lease, &writes).await {
                    Ok(written) => {
                        for queued in taken.drain(..) {
                            let _ = queued.done.send(Ok(written.contains(&queued.progress.id)));
                        }
                    }
                    Err(error) => {
                        // Each write again on its own, so each gets its own answer.
                        tracing::warn!(%error, writes = taken.len(), "saga progress batch failed");
                        for queued in taken.drain(..) {
                            let alone = execute(&pool, lease, &[&queued.progress])
                                .await
                                .map(|written| !written.is_empty());
                            let _ = queued.done.send(alone);
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Queues `progress` and waits for it to be written; `Ok(false)` if its fence did not
    /// match. `None` if the writer is gone (the caller writes it itself).
    pub(crate) async fn write(&self, progress: Progress) -> Option<Result<bool, SagaError>> {
        let (done, answer) = oneshot::channel();
        self.queue.send(Queued { progress, done }).await.ok()?;
        answer.await.ok()
    }
}
