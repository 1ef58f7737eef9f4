//! Workers: claim due runs under a lease, run their steps, record progress after each one.
//!
//! Any number of workers (replicas) may run one saga kind against one database. A claim takes
//! due runs with `FOR UPDATE SKIP LOCKED` and leases them to this worker for
//! [`WorkerConfig::lease`]; every recorded step renews the lease, and every write is guarded by
//! "still mine", so a worker that lost its lease (it stalled past it and another took over)
//! stops at its next write. A crash anywhere leaves the run with its last recorded step: when
//! the lease runs out, another worker resumes from there. The step that was in flight runs
//! again, with the same idempotency key: steps must be idempotent by that key, and should finish
//! well inside the lease (give their calls deadlines).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::SagaError;
use crate::definition::{Saga, StepError, StepInput};
use crate::store::{NOTIFY_CHANNEL, RunStatus};

/// How a worker claims and holds runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// This worker's name in `lease_owner` (unique per worker).
    pub owner: String,
    /// How long a claimed run stays this worker's without progress.
    pub lease: Duration,
    /// Runs claimed (and driven concurrently) at once.
    pub batch: i64,
    /// How often to look for due runs when no notification arrives (retries that come due,
    /// runs whose lease expired).
    pub poll: Duration,
}

/// Drives runs of one saga.
pub struct Worker<D> {
    pool: PgPool,
    saga: Arc<Saga<D>>,
    config: WorkerConfig,
}

/// What a write does with the run's lease.
#[derive(Debug, Clone, Copy)]
enum Lease {
    /// Keep it and extend it (progress was made).
    Renew,
    /// Give it up until `now + backoff` (a retry).
    ReleaseFor(Duration),
    /// Give it up (a final status).
    Release,
}

/// A run this worker holds.
#[derive(Debug)]
struct Held<D> {
    id: Uuid,
    status: RunStatus,
    step: i32,
    attempts: i32,
    data: D,
    failure: Option<String>,
}

// === impl WorkerConfig ===

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            owner: format!("saga-worker-{}", Uuid::new_v4()),
            lease: Duration::from_secs(30),
            batch: 16,
            poll: Duration::from_secs(1),
        }
    }
}

// === impl Worker ===

impl<D> Worker<D>
where
    D: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A worker for `saga` on `pool` (which holds `saga_runs`).
    pub fn new(pool: PgPool, saga: Saga<D>, config: WorkerConfig) -> Self {
        Self {
            pool,
            saga: Arc::new(saga),
            config,
        }
    }

    /// Drives due runs until `stop` is cancelled: woken by [`start`](crate::start)'s
    /// notification, and every [`WorkerConfig::poll`] for retries and expired leases.
    pub async fn run(&self, stop: CancellationToken) -> Result<(), SagaError> {
        let mut listener = self.listen().await;
        while !stop.is_cancelled() {
            match self.run_once().await {
                Ok(0) => {}
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, kind = self.saga.kind, "saga worker pass failed");
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = wait(&mut listener, self.config.poll) => {}
            }
        }
        Ok(())
    }

    /// Claims the due runs (up to [`WorkerConfig::batch`]) and drives each as far as it goes
    /// now: to its end, to a retry wait, or until the lease is lost. Returns how many it claimed.
    pub async fn run_once(&self) -> Result<usize, SagaError> {
        let held = self.claim().await?;
        let claimed = held.len();
        let results = futures::future::join_all(held.into_iter().map(|run| self.drive(run))).await;
        for result in results {
            if let Err(error) = result {
                tracing::warn!(%error, kind = self.saga.kind, "saga run not advanced");
            }
        }
        Ok(claimed)
    }

    async fn listen(&self) -> Option<PgListener> {
        let listen = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listen.await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "saga worker cannot LISTEN; polling only");
                None
            }
        }
    }

    async fn claim(&self) -> Result<Vec<Held<D>>, SagaError> {
        let rows = sqlx::query(
            "UPDATE saga_runs r \
             SET lease_owner = $1, lease_until = now() + make_interval(secs => $2), \
                 updated_at = now() \
             FROM (SELECT id FROM saga_runs \
                   WHERE kind = $3 AND status IN ('running', 'compensating') \
                     AND next_attempt_at <= now() \
                     AND (lease_until IS NULL OR lease_until < now()) \
                   ORDER BY next_attempt_at LIMIT $4 \
                   FOR UPDATE SKIP LOCKED) due \
             WHERE r.id = due.id \
             RETURNING r.id, r.status, r.step, r.attempts, r.data::text AS data, r.failure",
        )
        .bind(&self.config.owner)
        .bind(self.config.lease.as_secs_f64())
        .bind(self.saga.kind)
        .bind(self.config.batch)
        .fetch_all(&self.pool)
        .await?;
        let mut held = Vec::with_capacity(rows.len());
        for row in rows {
            let id: Uuid = row.try_get("id")?;
            let decoded = serde_json::from_str::<D>(row.try_get("data")?)
                .map_err(SagaError::from)
                .and_then(|data| {
                    Ok(Held {
                        id,
                        status: RunStatus::parse(row.try_get("status")?)?,
                        step: row.try_get("step")?,
                        attempts: row.try_get("attempts")?,
                        data,
                        failure: row.try_get("failure")?,
                    })
                });
            match decoded {
                Ok(run) => held.push(run),
                Err(error) => {
                    // Retrying will not help: park it for an operator.
                    tracing::error!(%id, %error, "saga run unreadable; marked stuck");
                    self.park(id, &error.to_string()).await?;
                }
            }
        }
        Ok(held)
    }

    /// Runs steps (or compensations) of `run` until it ends, waits for a retry, or the lease
    /// is lost.
    async fn drive(&self, mut run: Held<D>) -> Result<(), SagaError> {
        let steps = &self.saga.steps;
        loop {
            match run.status {
                RunStatus::Running => {
                    let Some(step) = usize::try_from(run.step).ok().and_then(|i| steps.get(i))
                    else {
                        run.status = RunStatus::Completed;
                        return self.finish(&run, None).await;
                    };
                    let attempt = run.attempts.saturating_add(1);
                    let input = StepInput {
                        saga_id: run.id,
                        idempotency_key: format!("{}:{}", run.id, step.name),
                        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                        data: run.data.clone(),
                    };
                    match (step.action)(input).await {
                        Ok(data) => {
                            tracing::debug!(id = %run.id, step = step.name, "saga step done");
                            run.data = data;
                            run.step += 1;
                            run.attempts = 0;
                        }
                        Err(StepError::Transient(error))
                            if u32::try_from(attempt).unwrap_or(u32::MAX)
                                < self.saga.retry.max_attempts =>
                        {
                            run.attempts = attempt;
                            return self.defer(&run, &error).await;
                        }
                        Err(error) => {
                            tracing::info!(id = %run.id, step = step.name, %error, "saga compensating");
                            run.status = RunStatus::Compensating;
                            run.failure = Some(format!("{}: {error}", step.name));
                            run.step -= 1;
                            run.attempts = 0;
                        }
                    }
                    if !self.record(&run).await? {
                        return Ok(());
                    }
                }
                RunStatus::Compensating => {
                    let Ok(index) = usize::try_from(run.step) else {
                        run.status = RunStatus::Compensated;
                        return self.finish(&run, None).await;
                    };
                    let step = steps.get(index).ok_or_else(|| {
                        SagaError::Corrupt(format!(
                            "run {} at step {index} of {}",
                            run.id,
                            steps.len()
                        ))
                    })?;
                    let Some(compensation) = &step.compensation else {
                        run.step -= 1;
                        continue;
                    };
                    let attempt = run.attempts.saturating_add(1);
                    let input = StepInput {
                        saga_id: run.id,
                        idempotency_key: format!("{}:{}:compensate", run.id, step.name),
                        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                        data: run.data.clone(),
                    };
                    match (compensation)(input).await {
                        Ok(data) => {
                            run.data = data;
                            run.step -= 1;
                            run.attempts = 0;
                            if !self.record(&run).await? {
                                return Ok(());
                            }
                        }
                        // Compensations are retried until they succeed.
                        Err(StepError::Transient(error)) => {
                            run.attempts = attempt;
                            return self.defer(&run, &error).await;
                        }
                        Err(StepError::Failed(error)) => {
                            tracing::error!(id = %run.id, step = step.name, %error, "saga stuck");
                            run.status = RunStatus::Stuck;
                            return self
                                .finish(&run, Some(&format!("{}: {error}", step.name)))
                                .await;
                        }
                    }
                }
                RunStatus::Completed | RunStatus::Compensated | RunStatus::Stuck => return Ok(()),
            }
        }
    }

    /// Records progress and renews the lease; `false` if the lease is no longer ours.
    async fn record(&self, run: &Held<D>) -> Result<bool, SagaError> {
        let written = self.write(run, Lease::Renew, None).await?;
        if !written {
            tracing::warn!(id = %run.id, "saga lease lost; another worker has the run");
        }
        Ok(written)
    }

    /// Releases the run until its next attempt is due.
    async fn defer(&self, run: &Held<D>, error: &str) -> Result<(), SagaError> {
        let attempt = u32::try_from(run.attempts).unwrap_or(u32::MAX);
        let backoff = self.saga.retry.backoff(attempt);
        tracing::debug!(id = %run.id, attempt, ?backoff, error, "saga step will be retried");
        self.write(run, Lease::ReleaseFor(backoff), Some(error))
            .await
            .map(drop)
    }

    /// Records a final status and releases the run.
    async fn finish(&self, run: &Held<D>, error: Option<&str>) -> Result<(), SagaError> {
        self.write(run, Lease::Release, error).await?;
        tracing::info!(id = %run.id, status = run.status.as_str(), "saga finished");
        Ok(())
    }

    /// Writes `run` as it stands, with `error` as its last error (if any), and does `lease`;
    /// `false` if the run is no longer leased to this worker (nothing was written).
    async fn write(
        &self,
        run: &Held<D>,
        lease: Lease,
        error: Option<&str>,
    ) -> Result<bool, SagaError> {
        let (keep_lease, retry_in) = match lease {
            Lease::Renew => (true, None),
            Lease::ReleaseFor(backoff) => (false, Some(backoff.as_secs_f64())),
            Lease::Release => (false, None),
        };
        let updated = sqlx::query(
            "UPDATE saga_runs SET status = $3, step = $4, attempts = $5, data = $6::jsonb, \
                 failure = $7, last_error = COALESCE($8, last_error), \
                 next_attempt_at = CASE WHEN $9::float8 IS NULL THEN next_attempt_at \
                                        ELSE now() + make_interval(secs => $9) END, \
                 lease_owner = CASE WHEN $10 THEN lease_owner END, \
                 lease_until = CASE WHEN $10 THEN now() + make_interval(secs => $11) END, \
                 updated_at = now() \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(run.id)
        .bind(&self.config.owner)
        .bind(run.status.as_str())
        .bind(run.step)
        .bind(run.attempts)
        .bind(serde_json::to_string(&run.data)?)
        .bind(run.failure.as_deref())
        .bind(error)
        .bind(retry_in)
        .bind(keep_lease)
        .bind(self.config.lease.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Marks an unreadable run stuck.
    async fn park(&self, id: Uuid, error: &str) -> Result<(), SagaError> {
        sqlx::query(
            "UPDATE saga_runs SET status = 'stuck', last_error = $3, lease_owner = NULL, \
                 lease_until = NULL, updated_at = now() \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(&self.config.owner)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Waits for a notification or `poll`, whichever comes first.
async fn wait(listener: &mut Option<PgListener>, poll: Duration) {
    match listener {
        Some(listening) => {
            if let Ok(Err(error)) = tokio::time::timeout(poll, listening.recv()).await {
                tracing::warn!(%error, "saga LISTEN connection failed; polling only");
                *listener = None;
            }
        }
        None => tokio::time::sleep(poll).await,
    }
}
