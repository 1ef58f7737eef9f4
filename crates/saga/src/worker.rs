//! Workers: claim due runs under a fenced lease, run their steps under a timeout while
//! heartbeating, record each attempt in one statement.
//!
//! Any number of workers (replicas) may run one saga kind against one database.
//!
//! - **Claim.** A claim takes up to [`WorkerConfig::batch`] due runs with `FOR UPDATE SKIP
//!   LOCKED`, leases them to this worker for [`WorkerConfig::lease`] and increments each run's
//!   `lease_epoch`: the claim's fencing token ([`Fence`]).
//! - **Fencing.** Every write the worker makes for a run (progress, retry wait, final status,
//!   parking, heartbeat, release) is guarded by `id = $1 AND lease_epoch = <its epoch>`. A worker
//!   that stalled past its lease while another claimed the run matches nothing: it can never
//!   record progress. Steps that write to the same database lock the run's row with
//!   [`Fence::hold`] inside their transaction, so their own writes are fenced too.
//! - **One statement per attempt, shared.** The progress write and the attempt's row in
//!   `saga_steps` are one statement (a CTE: the history row is inserted only if the fenced
//!   update matched); the last step's write also completes the run. Under [`Worker::run`] the
//!   writes of all the runs the worker drives are coalesced: while one statement is in flight
//!   the next writes queue, and go together in the next one (over `unnest`ed arrays, each row
//!   fenced on its own). A 5-step run costs at most 5 statements plus its share of a claim, and
//!   far less than one commit per step under load (see `docs/saga.md`).
//! - **Heartbeat and timeout.** Each attempt runs under [`WorkerConfig::step_timeout`] (shorter
//!   than the lease). An attempt still running after a third of the lease renews the lease
//!   (fenced), and again every third; no heartbeat statement is spent on the usual short step.
//!   A renewal that finds the lease lost drops the attempt's future and stops driving the run.
//!   A timeout counts as an unknown outcome, like [`StepError::Transient`].
//! - **Unknown outcomes are compensated.** An action still in doubt after
//!   [`RetryPolicy::max_attempts`](crate::RetryPolicy::max_attempts) is compensated along with
//!   the completed steps (the remote side may have applied it); a
//!   [`StepError::Failed`] action is not (it was definitely not applied).
//! - **Stuck, never a hot loop.** Transient failures wait a capped exponential backoff (at least
//!   half of it, see [`RetryPolicy`]): a wait up to [`WorkerConfig::poll`] (and a third of the
//!   lease) in place, holding the run, a longer one with the lease released; a
//!   compensation that fails for good, or a run whose state cannot be read, is parked `stuck`
//!   with its error and never claimed again until [`store::retry_stuck`](crate::store::retry_stuck).
//! - **Identity.** [`WorkerConfig::owner`] is a prefix: each [`Worker`] appends a random
//!   suffix, so two workers built from one config have distinct identities ([`Worker::owner`]).
//!
//! A crash anywhere leaves the run with its last recorded step; when the lease runs out another
//! worker resumes from there and runs the step in flight again with the same idempotency key.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Row};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::SagaError;
use crate::definition::{RetryPolicy, Saga, Step, StepError, StepFn, StepInput};
use crate::fence::Fence;
use crate::metrics::SagaMetrics;
use crate::progress::{self, History, Progress, Writer};
use crate::store::{NOTIFY_CHANNEL, Outcome, Phase, RunStatus};

/// How a worker claims and holds runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Prefix of this worker's identity in `lease_owner`; each [`Worker`] appends `-<random
    /// suffix>`, so replicas (or several workers in one process) may share a config.
    pub owner: String,
    /// How long a claimed run stays this worker's without a recorded step or heartbeat.
    pub lease: Duration,
    /// Runs claimed at once, and driven concurrently at most, by one worker (default 32). A
    /// worker completes about `batch / run duration` runs per second: for 1,000 runs/s of runs
    /// that take 50 ms end to end, at least 50 across the replicas.
    pub batch: i64,
    /// How often to look for due runs when no notification arrives (retries that come due,
    /// runs whose lease expired). A retry wait no longer than this (and a third of the lease)
    /// is waited by the worker holding the run, so that the retry is not late by up to a poll.
    pub poll: Duration,
    /// The longest one attempt of an action or compensation may take; it is then dropped and
    /// counts as an unknown outcome. Must be shorter than [`lease`](Self::lease):
    /// [`Worker::try_new`] refuses a config where it is not, [`Worker::new`] clamps it to half
    /// the lease.
    pub step_timeout: Duration,
    /// How often [`Worker::run`] refreshes the `saga_runs` gauge of its
    /// [metrics](Worker::with_metrics) (one `GROUP BY` query).
    pub gauge_refresh: Duration,
}

/// Drives runs of one saga.
pub struct Worker<D> {
    driver: Driver<D>,
    batch: i64,
    poll: Duration,
    gauge_refresh: Duration,
}

/// What the spawned drives of a worker share. Cheap to clone.
struct Driver<D> {
    pool: PgPool,
    saga: Arc<Saga<D>>,
    owner: Arc<str>,
    lease: Duration,
    step_timeout: Duration,
    /// Retry waits up to this (and a third of the lease) are waited holding the run.
    poll: Duration,
    metrics: Option<SagaMetrics>,
    /// Coalesces progress writes (only while [`Worker::run`] runs).
    writer: Option<Writer>,
}

/// What a write does with the run's lease.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lease {
    /// Keep it and extend it (progress was made).
    Renew,
    /// Give it up until `now + backoff` (a retry).
    ReleaseFor(Duration),
    /// Give it up (a final status, or the worker is stopping).
    Release,
}

/// A run this worker holds under one claim.
#[derive(Debug)]
struct Held<D> {
    id: Uuid,
    epoch: i64,
    status: RunStatus,
    step: i32,
    attempts: i32,
    data: D,
    failure: Option<String>,
    /// The trace context the run was started under (empty without one).
    trace: shop_trace::TraceFields,
}

/// How one attempt ended, as the worker saw it.
#[derive(Debug)]
enum Attempted<D> {
    Done(D),
    Transient(String),
    Failed(String),
    Timeout,
}

/// One attempt, as it goes into `saga_steps`.
#[derive(Debug)]
struct Record {
    step: &'static str,
    phase: Phase,
    outcome: Outcome,
    error: Option<String>,
    attempt: i32,
    took: Duration,
}

/// What a run does after an attempt has been applied to it.
#[derive(Debug, Clone, PartialEq)]
struct Applied {
    lease: Lease,
    /// The run's new `last_error` (kept if `None`).
    last_error: Option<String>,
    /// Whether the saga's data changed (and must be written).
    data_changed: bool,
}

// === impl WorkerConfig ===

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            owner: "saga-worker".to_owned(),
            lease: Duration::from_secs(30),
            batch: 32,
            poll: Duration::from_secs(1),
            step_timeout: Duration::from_secs(10),
            gauge_refresh: Duration::from_secs(5),
        }
    }
}

impl WorkerConfig {
    /// Why this config cannot work, if it cannot.
    fn problem(&self) -> Option<String> {
        if self.lease.is_zero() {
            return Some("lease must be positive".to_owned());
        }
        if self.step_timeout.is_zero() || self.step_timeout >= self.lease {
            return Some(format!(
                "step_timeout ({:?}) must be positive and shorter than the lease ({:?})",
                self.step_timeout, self.lease
            ));
        }
        if self.batch < 1 {
            return Some(format!("batch ({}) must be at least 1", self.batch));
        }
        if self.poll.is_zero() || self.gauge_refresh.is_zero() {
            return Some("poll and gauge_refresh must be positive".to_owned());
        }
        None
    }

    /// The nearest config that works.
    fn clamped(mut self) -> Self {
        let default = Self::default();
        if self.lease.is_zero() {
            self.lease = default.lease;
        }
        if self.step_timeout.is_zero() || self.step_timeout >= self.lease {
            self.step_timeout = self.lease / 2;
        }
        self.batch = self.batch.max(1);
        if self.poll.is_zero() {
            self.poll = Duration::from_millis(1);
        }
        if self.gauge_refresh.is_zero() {
            self.gauge_refresh = default.gauge_refresh;
        }
        self
    }
}

// === impl Worker ===

impl<D> Worker<D>
where
    D: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A worker for `saga` on `pool` (which holds `saga_runs`). A config that cannot work is
    /// clamped, with a warning: a `step_timeout` not shorter than the lease becomes half the
    /// lease, a zero lease the default, a batch below 1 becomes 1, a zero poll 1 ms. Use
    /// [`try_new`](Self::try_new) to have it refused instead.
    pub fn new(pool: PgPool, saga: Saga<D>, config: WorkerConfig) -> Self {
        if let Some(problem) = config.problem() {
            tracing::warn!(kind = saga.kind, %problem, "saga worker config clamped");
        }
        Self::build(pool, saga, config.clamped())
    }

    /// Like [`new`](Self::new), but a config that cannot work (a `step_timeout` not shorter
    /// than the lease, a zero lease, poll or gauge refresh, a batch below 1) is
    /// [`SagaError::InvalidConfig`].
    pub fn try_new(pool: PgPool, saga: Saga<D>, config: WorkerConfig) -> Result<Self, SagaError> {
        match config.problem() {
            Some(problem) => Err(SagaError::InvalidConfig(problem)),
            None => Ok(Self::build(pool, saga, config)),
        }
    }

    fn build(pool: PgPool, saga: Saga<D>, config: WorkerConfig) -> Self {
        let WorkerConfig {
            owner,
            lease,
            batch,
            poll,
            step_timeout,
            gauge_refresh,
        } = config;
        // 48 random bits: distinct per worker even when every replica has the same config.
        let suffix = Uuid::new_v4().as_u128() >> 80;
        Self {
            driver: Driver {
                pool,
                saga: Arc::new(saga),
                owner: format!("{owner}-{suffix:012x}").into(),
                lease,
                step_timeout,
                poll,
                metrics: None,
                writer: None,
            },
            batch,
            poll,
            gauge_refresh,
        }
    }

    /// Counts attempts into `metrics`, and has [`run`](Self::run) refresh its runs gauge.
    #[must_use]
    pub fn with_metrics(mut self, metrics: SagaMetrics) -> Self {
        self.driver.metrics = Some(metrics);
        self
    }

    /// This worker's identity in `lease_owner`: the configured prefix and a random suffix.
    pub fn owner(&self) -> &str {
        &self.driver.owner
    }

    /// The step timeout in force (after clamping by [`new`](Self::new)).
    pub fn step_timeout(&self) -> Duration {
        self.driver.step_timeout
    }

    /// Drives due runs until `stop` is cancelled, up to [`WorkerConfig::batch`] at once, each
    /// on its own task: claims more when a quarter of the batch is free (or none is in flight)
    /// and there is reason to look (woken by [`start`](crate::start)'s notification, a full
    /// previous claim, or every [`WorkerConfig::poll`] for retries and expired leases). On `stop`, each run stops after
    /// its current attempt and its lease is released for another replica.
    pub async fn run(&self, stop: CancellationToken) -> Result<(), SagaError> {
        let driver = Driver {
            writer: Some(Writer::spawn(
                self.driver.pool.clone(),
                self.driver.lease,
                usize::try_from(self.batch).unwrap_or(1),
            )),
            ..self.driver.clone()
        };
        let mut listener = listen(&driver.pool).await;
        let mut drives: JoinSet<Result<(), SagaError>> = JoinSet::new();
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut gauges = tokio::time::interval(self.gauge_refresh);
        gauges.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut look = true;
        // Under load, claim only once a quarter of the batch is free: one claim statement
        // serves several runs instead of one per finished run.
        let refill = (self.batch / 4).max(1);
        loop {
            let room = self
                .batch
                .saturating_sub(i64::try_from(drives.len()).unwrap_or(i64::MAX));
            if look && room > 0 && (room >= refill || drives.is_empty()) && !stop.is_cancelled() {
                look = false;
                match driver.claim(room).await {
                    Ok(runs) => {
                        // A full claim: more may be due; look again when there is room.
                        look = i64::try_from(runs.len()).unwrap_or(i64::MAX) >= room;
                        for run in runs {
                            let driver = driver.clone();
                            let stop = stop.clone();
                            drives.spawn(async move { driver.drive(run, &stop).await });
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, kind = self.driver.saga.kind, "saga claim failed");
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                Some(done) = drives.join_next(), if !drives.is_empty() => self.report(done),
                () = notified(&mut listener) => look = true,
                _ = poll.tick() => look = true,
                _ = gauges.tick(), if self.driver.metrics.is_some() => self.refresh_gauges().await,
            }
        }
        while let Some(done) = drives.join_next().await {
            self.report(done);
        }
        Ok(())
    }

    /// Claims the due runs (up to [`WorkerConfig::batch`]) and drives each as far as it goes
    /// now: to its end, to a retry wait, or until the lease is lost. Returns how many it claimed.
    pub async fn run_once(&self) -> Result<usize, SagaError> {
        let held = self.driver.claim(self.batch).await?;
        let claimed = held.len();
        let never = CancellationToken::new();
        let results =
            futures::future::join_all(held.into_iter().map(|run| self.driver.drive(run, &never)))
                .await;
        for result in results {
            if let Err(error) = result {
                tracing::warn!(%error, kind = self.driver.saga.kind, "saga run not advanced");
            }
        }
        Ok(claimed)
    }

    fn report(&self, done: Result<Result<(), SagaError>, tokio::task::JoinError>) {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, kind = self.driver.saga.kind, "saga run not advanced");
            }
            Err(error) => {
                tracing::error!(%error, kind = self.driver.saga.kind, "saga drive panicked");
            }
        }
    }

    async fn refresh_gauges(&self) {
        if let Some(metrics) = &self.driver.metrics
            && let Err(error) = metrics
                .refresh(&self.driver.pool, self.driver.saga.kind)
                .await
        {
            tracing::warn!(%error, kind = self.driver.saga.kind, "saga gauges not refreshed");
        }
    }
}

// === impl Driver ===

impl<D> Clone for Driver<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            saga: self.saga.clone(),
            owner: self.owner.clone(),
            lease: self.lease,
            step_timeout: self.step_timeout,
            poll: self.poll,
            metrics: self.metrics.clone(),
            writer: self.writer.clone(),
        }
    }
}

impl<D> Driver<D>
where
    D: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// Claims up to `limit` due runs: one statement. Runs whose stored state cannot be read are
    /// parked `stuck`.
    async fn claim(&self, limit: i64) -> Result<Vec<Held<D>>, SagaError> {
        let rows = sqlx::query(
            "UPDATE saga_runs r \
             SET lease_owner = $1, lease_until = now() + make_interval(secs => $2), \
                 lease_epoch = r.lease_epoch + 1, updated_at = now() \
             FROM (SELECT id FROM saga_runs \
                   WHERE kind = $3 AND status IN ('running', 'compensating') \
                     AND next_attempt_at <= now() \
                     AND (lease_until IS NULL OR lease_until < now()) \
                   ORDER BY next_attempt_at LIMIT $4 \
                   FOR UPDATE SKIP LOCKED) due \
             WHERE r.id = due.id \
             RETURNING r.id, r.lease_epoch, r.status, r.step, r.attempts, r.data::text AS data, \
                       r.failure, r.trace_context::text AS trace_context",
        )
        .bind(&*self.owner)
        .bind(self.lease.as_secs_f64())
        .bind(self.saga.kind)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut held = Vec::with_capacity(rows.len());
        for row in rows {
            let id: Uuid = row.try_get("id")?;
            let epoch: i64 = row.try_get("lease_epoch")?;
            let decoded = serde_json::from_str::<D>(row.try_get("data")?)
                .map_err(SagaError::from)
                .and_then(|data| {
                    Ok(Held {
                        id,
                        epoch,
                        status: RunStatus::parse(row.try_get("status")?)?,
                        step: row.try_get("step")?,
                        attempts: row.try_get("attempts")?,
                        data,
                        failure: row.try_get("failure")?,
                        // A context that cannot be read only costs the trace its parent.
                        trace: row
                            .try_get::<Option<&str>, _>("trace_context")?
                            .and_then(|t| serde_json::from_str(t).ok())
                            .unwrap_or_default(),
                    })
                });
            match decoded {
                Ok(run) => held.push(run),
                Err(error) => {
                    // The others were claimed all the same: do not lose them over this one.
                    if let Err(parking) = self.park(id, epoch, &error.to_string()).await {
                        tracing::warn!(%id, error = %parking, "saga run not parked");
                    }
                }
            }
        }
        Ok(held)
    }

    /// Runs attempts of `run` until it ends, waits for a retry, loses its lease, or `stop`.
    async fn drive(&self, mut run: Held<D>, stop: &CancellationToken) -> Result<(), SagaError> {
        let steps = &self.saga.steps;
        let fence = Fence::new(run.id, run.epoch);
        if let Err(corrupt) = settle(&mut run, steps) {
            return self.park(run.id, run.epoch, &corrupt).await;
        }
        if run.status.is_final() {
            // Claimed with nothing left to do (e.g. only steps without compensation left).
            self.write(&run, Lease::Release, None, false, None).await?;
            return Ok(());
        }
        loop {
            if stop.is_cancelled() {
                return self.release(&run).await;
            }
            let index = usize::try_from(run.step).unwrap_or(usize::MAX);
            let Some(step) = steps.get(index) else {
                return self
                    .park(
                        run.id,
                        run.epoch,
                        &format!("step {} out of range", run.step),
                    )
                    .await;
            };
            let (phase, call, key) = match (run.status, &step.compensation, &step.action) {
                (RunStatus::Compensating, Some(compensation), _) => (
                    Phase::Compensation,
                    compensation,
                    format!("{}:{}:compensate", run.id, step.name),
                ),
                (RunStatus::Running, _, Some(action)) => {
                    (Phase::Action, action, format!("{}:{}", run.id, step.name))
                }
                // `settle` only stops at a step with something to run.
                _ => {
                    let position = format!("nothing to run at step {}", run.step);
                    return self.park(run.id, run.epoch, &position).await;
                }
            };
            let attempt = run.attempts.saturating_add(1);
            let input = StepInput {
                saga_id: run.id,
                idempotency_key: key,
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                data: run.data.clone(),
                failure: match phase {
                    Phase::Action => None,
                    Phase::Compensation => run.failure.clone(),
                },
                fence,
            };
            let span = tracing::info_span!(
                "saga step",
                otel.name = %format!("saga {} {}", self.saga.kind, step.name),
                otel.status_code = tracing::field::Empty,
                saga.kind = self.saga.kind,
                saga.id = %run.id,
                saga.step = step.name,
                saga.phase = phase.as_str(),
                saga.attempt = attempt,
                saga.outcome = tracing::field::Empty,
            );
            shop_trace::set_parent(&span, &run.trace);
            let started = Instant::now();
            let attempted = self
                .attempt(&fence, call, input)
                .instrument(span.clone())
                .await;
            let mut record = Record {
                step: step.name,
                phase,
                outcome: Outcome::Ok,
                error: None,
                attempt,
                took: started.elapsed(),
            };
            let Some(attempted) = attempted else {
                record.outcome = Outcome::LeaseLost;
                record.error = Some("lease lost while the attempt ran; dropped".to_owned());
                return self.lost(&run, record).await;
            };
            let mut applied = apply(
                &mut run,
                steps,
                &self.saga.retry,
                self.step_timeout,
                attempted,
                &mut record,
            );
            // A short wait is waited here, holding the lease: the retry comes when it is due,
            // not at the next claim (up to a poll later), and costs no claim. A long one
            // releases the run to whichever worker is free when it comes due.
            let wait_here = match applied.lease {
                Lease::ReleaseFor(wait) if wait <= self.poll.min(self.lease / 3) => {
                    applied.lease = Lease::Renew;
                    Some(wait)
                }
                _ => None,
            };
            let written = self
                .write(
                    &run,
                    applied.lease,
                    applied.last_error.as_deref(),
                    applied.data_changed,
                    Some(&record),
                )
                .await?;
            if !written {
                record.error = Some(format!(
                    "lease lost; the attempt ended {} but was not recorded{}",
                    record.outcome.as_str(),
                    record
                        .error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ));
                record.outcome = Outcome::LeaseLost;
                return self.lost(&run, record).await;
            }
            self.observe(&record);
            span.record("saga.outcome", record.outcome.as_str());
            if record.outcome != Outcome::Ok {
                span.record("otel.status_code", "ERROR");
            }
            drop(span);
            if let Some(wait) = wait_here {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return self.release(&run).await,
                }
            }
            match applied.lease {
                Lease::Renew => {}
                Lease::ReleaseFor(_) | Lease::Release => {
                    if run.status.is_final() {
                        tracing::info!(id = %run.id, status = run.status.as_str(), "saga finished");
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Runs one attempt under the step timeout, renewing the lease from a third of it on;
    /// `None` if a renewal found the lease lost (the attempt was dropped).
    async fn attempt(
        &self,
        fence: &Fence,
        call: &StepFn<D>,
        input: StepInput<D>,
    ) -> Option<Attempted<D>> {
        // A step that panics (in its closure or its future) is an unknown outcome like any
        // other: retried, then compensated, never a dead drive task that holds the lease.
        let step = match std::panic::catch_unwind(AssertUnwindSafe(|| call(input))) {
            Ok(step) => AssertUnwindSafe(step).catch_unwind().boxed(),
            Err(panic) => futures::future::ready(Err(panic)).boxed(),
        };
        let work = tokio::time::timeout(self.step_timeout, step);
        tokio::pin!(work);
        let period = (self.lease / 3).max(Duration::from_millis(1));
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The renewal in flight. It is polled beside the step, never instead of it: a step
        // holding the run's row lock (Fence::hold) makes the renewal wait for its transaction,
        // which only ends if the step keeps being driven.
        let mut renewal: Option<BoxFuture<'_, Result<bool, SagaError>>> = None;
        loop {
            tokio::select! {
                biased;
                done = &mut work => return Some(match done {
                    Ok(Ok(Ok(data))) => Attempted::Done(data),
                    Ok(Ok(Err(StepError::Transient(error)))) => Attempted::Transient(error),
                    Ok(Ok(Err(StepError::Failed(error)))) => Attempted::Failed(error),
                    Ok(Err(panic)) => Attempted::Transient(format!("step panicked: {}", panic_message(&*panic))),
                    Err(_) => Attempted::Timeout,
                }),
                renewed = async {
                    match renewal.as_mut() {
                        Some(renewing) => renewing.await,
                        None => futures::future::pending().await,
                    }
                }, if renewal.is_some() => {
                    renewal = None;
                    match renewed {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(id = %fence.run_id(), "saga lease lost during a step; dropping it");
                            return None;
                        }
                        // The lease may run out; fenced writes keep that safe.
                        Err(error) => {
                            tracing::warn!(%error, id = %fence.run_id(), "saga heartbeat failed");
                        }
                    }
                }
                _ = beat.tick(), if renewal.is_none() => renewal = Some(Box::pin(self.renew(fence))),
            }
        }
    }

    /// Extends the lease; `false` if the run is no longer this claim's.
    async fn renew(&self, fence: &Fence) -> Result<bool, SagaError> {
        let renewed = sqlx::query(
            "UPDATE saga_runs SET lease_until = now() + make_interval(secs => $3) \
             WHERE id = $1 AND lease_epoch = $2",
        )
        .bind(fence.run_id())
        .bind(fence.epoch())
        .bind(self.lease.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Writes `run` as it stands and does `lease`, and (with `record`) inserts the attempt's
    /// history row, in one statement (shared with other runs' writes under [`Worker::run`]);
    /// `false` if the run is no longer this claim's (nothing was written).
    async fn write(
        &self,
        run: &Held<D>,
        lease: Lease,
        last_error: Option<&str>,
        data_changed: bool,
        record: Option<&Record>,
    ) -> Result<bool, SagaError> {
        let (keep_lease, retry_in) = match lease {
            Lease::Renew => (true, None),
            Lease::ReleaseFor(backoff) => (false, Some(backoff.as_secs_f64())),
            Lease::Release => (false, None),
        };
        let progress = Progress {
            id: run.id,
            epoch: run.epoch,
            status: run.status.as_str(),
            step: run.step,
            attempts: run.attempts,
            data: data_changed
                .then(|| serde_json::to_string(&run.data))
                .transpose()?,
            failure: run.failure.clone(),
            last_error: last_error.map(str::to_owned),
            retry_in,
            keep_lease,
            record: record.map(|r| History {
                step: r.step,
                phase: r.phase.as_str(),
                outcome: r.outcome.as_str(),
                error: r.error.clone(),
                attempt: r.attempt,
                took: r.took.as_secs_f64(),
            }),
        };
        if let Some(writer) = &self.writer
            && let Some(written) = writer.write(progress.clone()).await
        {
            return written;
        }
        let written = progress::execute(&self.pool, self.lease, &[&progress]).await?;
        Ok(!written.is_empty())
    }

    /// Records an attempt whose claim was lost (history only: the run is another claim's now).
    async fn lost(&self, run: &Held<D>, record: Record) -> Result<(), SagaError> {
        tracing::warn!(id = %run.id, step = record.step, "saga lease lost; another worker has the run");
        self.observe(&record);
        sqlx::query(
            "INSERT INTO saga_steps \
                 (run_id, step, phase, outcome, error, attempt, epoch, started_at, finished_at) \
             VALUES ($1, $2, $3, 'lease_lost', $4, $5, $6, \
                     now() - make_interval(secs => $7), now())",
        )
        .bind(run.id)
        .bind(record.step)
        .bind(record.phase.as_str())
        .bind(record.error.as_deref())
        .bind(record.attempt)
        .bind(run.epoch)
        .bind(record.took.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives the run's lease up early (the worker is stopping).
    async fn release(&self, run: &Held<D>) -> Result<(), SagaError> {
        sqlx::query(
            "UPDATE saga_runs SET lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_epoch = $2",
        )
        .bind(run.id)
        .bind(run.epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Parks a run whose state cannot be used as `stuck`, with why.
    async fn park(&self, id: Uuid, epoch: i64, error: &str) -> Result<(), SagaError> {
        tracing::error!(%id, error, "saga run unreadable; parked as stuck");
        sqlx::query(
            "UPDATE saga_runs SET status = 'stuck', last_error = $3, lease_owner = NULL, \
                 lease_until = NULL, updated_at = now() \
             WHERE id = $1 AND lease_epoch = $2",
        )
        .bind(id)
        .bind(epoch)
        .bind(format!("corrupt: {error}"))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn observe(&self, record: &Record) {
        if let Some(metrics) = &self.metrics {
            metrics.observe(
                self.saga.kind,
                record.step,
                record.phase,
                record.outcome,
                record.took,
            );
        }
    }
}

/// Applies the end of an attempt to `run` and fills in `record`'s outcome and error: the pure
/// state machine of a run.
fn apply<D>(
    run: &mut Held<D>,
    steps: &[Step<D>],
    policy: &RetryPolicy,
    step_timeout: Duration,
    attempted: Attempted<D>,
    record: &mut Record,
) -> Applied {
    let (outcome, error) = match attempted {
        Attempted::Done(data) => {
            run.data = data;
            run.attempts = 0;
            run.step = match run.status {
                RunStatus::Compensating => run.step - 1,
                _ => run.step + 1,
            };
            // Moving off a step that exists cannot make the position corrupt.
            let _ = settle(run, steps);
            return Applied {
                lease: if run.status.is_final() {
                    Lease::Release
                } else {
                    Lease::Renew
                },
                last_error: None,
                data_changed: true,
            };
        }
        Attempted::Transient(error) => (Outcome::Transient, error),
        Attempted::Timeout => (
            Outcome::Timeout,
            format!("timed out after {step_timeout:?}"),
        ),
        Attempted::Failed(error) => (Outcome::Failed, error),
    };
    record.outcome = outcome;
    record.error = Some(error.clone());
    let name = record.step;
    let attempt = u32::try_from(record.attempt).unwrap_or(u32::MAX);
    let compensating = run.status == RunStatus::Compensating;
    if compensating && outcome == Outcome::Failed {
        // A compensation that will never succeed: an operator must look.
        tracing::error!(id = %run.id, step = name, %error, "saga stuck");
        run.status = RunStatus::Stuck;
        return Applied {
            lease: Lease::Release,
            last_error: Some(format!("{name}: {error}")),
            data_changed: false,
        };
    }
    // Compensations are retried until they succeed; actions in doubt up to max_attempts.
    if compensating || (outcome != Outcome::Failed && attempt < policy.max_attempts.max(1)) {
        run.attempts = record.attempt;
        return Applied {
            lease: Lease::ReleaseFor(policy.backoff(attempt)),
            last_error: Some(error),
            data_changed: false,
        };
    }
    // An action failed for good, or is still in doubt after its last attempt.
    let failure = format!("{name}: {}: {error}", outcome.as_str());
    tracing::info!(id = %run.id, step = name, %failure, "saga compensating");
    run.status = RunStatus::Compensating;
    run.failure = Some(failure);
    run.attempts = 0;
    if outcome == Outcome::Failed {
        // Definitely not applied: undo only the steps before it.
        run.step -= 1;
    }
    // Otherwise the step in doubt is compensated too: the remote side may have applied it.
    let _ = settle(run, steps);
    Applied {
        lease: if run.status.is_final() {
            Lease::Release
        } else {
            Lease::Renew
        },
        last_error: Some(error),
        data_changed: false,
    }
}

/// Brings `run` to the step it must attempt next: skips compensation-only steps while running
/// and steps without a compensation while compensating, and ends a run with nothing left to
/// do. `Err` if its position makes no sense.
fn settle<D>(run: &mut Held<D>, steps: &[Step<D>]) -> Result<(), String> {
    let len = i32::try_from(steps.len()).unwrap_or(i32::MAX);
    match run.status {
        RunStatus::Running => {
            if run.step < 0 {
                return Err(format!("running at step {} of {len}", run.step));
            }
            // Compensation-only steps have nothing to do going forward.
            while usize::try_from(run.step)
                .ok()
                .and_then(|i| steps.get(i))
                .is_some_and(|step| step.action.is_none())
            {
                run.step += 1;
            }
            if run.step >= len {
                run.status = RunStatus::Completed;
            }
        }
        RunStatus::Compensating => {
            if run.step >= len {
                return Err(format!("compensating at step {} of {len}", run.step));
            }
            while run.step >= 0
                && usize::try_from(run.step)
                    .ok()
                    .and_then(|i| steps.get(i))
                    .is_some_and(|step| step.compensation.is_none())
            {
                run.step -= 1;
            }
            if run.step < 0 {
                run.status = RunStatus::Compensated;
            }
        }
        RunStatus::Completed | RunStatus::Compensated | RunStatus::Stuck => {}
    }
    Ok(())
}

/// What a panic said, if it said it with a string.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Listens for [`start`](crate::start)'s notifications; `None` (poll only) if it cannot.
async fn listen(pool: &PgPool) -> Option<PgListener> {
    let listen = async {
        let mut listener = PgListener::connect_with(pool).await?;
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

/// Waits for a notification (never returns without a listener), then swallows the ones
/// already buffered: one claim answers them all.
async fn notified(listener: &mut Option<PgListener>) {
    let Some(listening) = listener.as_mut() else {
        return futures::future::pending().await;
    };
    match listening.recv().await {
        Ok(_) => while listening.next_buffered().is_some() {},
        Err(error) => {
            tracing::warn!(%error, "saga LISTEN connection failed; polling only");
            *listener = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;

    /// reserve (compensated) → authorize (compensated) → confirm (no compensation).
    fn saga() -> Saga<u32> {
        let noop = |i: StepInput<u32>| futures::future::ready(Ok(i.data)).boxed();
        Saga::new("order")
            .compensated_step("reserve", noop, noop)
            .compensated_step("authorize", noop, noop)
            .step("confirm", noop)
    }

    fn held(status: RunStatus, step: i32, attempts: i32) -> Held<u32> {
        Held {
            id: Uuid::nil(),
            epoch: 1,
            status,
            step,
            attempts,
            data: 0,
            failure: None,
            trace: shop_trace::TraceFields::new(),
        }
    }

    fn record(step: &'static str, attempt: i32) -> Record {
        Record {
            step,
            phase: Phase::Action,
            outcome: Outcome::Ok,
            error: None,
            attempt,
            took: Duration::ZERO,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        }
    }

    fn run_apply(run: &mut Held<u32>, attempted: Attempted<u32>, rec: &mut Record) -> Applied {
        let saga = saga();
        apply(
            run,
            &saga.steps,
            &policy(),
            Duration::from_secs(1),
            attempted,
            rec,
        )
    }

    #[test]
    fn the_last_step_done_completes_the_run_in_the_same_write() {
        let mut run = held(RunStatus::Running, 2, 1);
        let applied = run_apply(&mut run, Attempted::Done(7), &mut record("confirm", 2));
        assert_eq!(
            (run.status, run.step, run.attempts, run.data),
            (RunStatus::Completed, 3, 0, 7)
        );
        assert_eq!(applied.lease, Lease::Release);
        assert!(applied.data_changed);
    }

    #[test]
    fn a_transient_action_waits_then_is_compensated_itself_once_attempts_run_out() {
        let mut run = held(RunStatus::Running, 1, 1);
        let mut rec = record("authorize", 2);
        let applied = run_apply(&mut run, Attempted::Transient("down".into()), &mut rec);
        assert!(matches!(applied.lease, Lease::ReleaseFor(_)));
        assert_eq!(
            (run.status, run.step, run.attempts),
            (RunStatus::Running, 1, 2)
        );
        assert_eq!(
            (rec.outcome, rec.error.as_deref()),
            (Outcome::Transient, Some("down"))
        );

        let mut rec = record("authorize", 3);
        let applied = run_apply(&mut run, Attempted::Timeout, &mut rec);
        assert_eq!(applied.lease, Lease::Renew);
        assert_eq!(
            (run.status, run.step, run.attempts),
            (RunStatus::Compensating, 1, 0),
            "authorize, in doubt, is the first to undo"
        );
        assert_eq!(
            run.failure.as_deref(),
            Some("authorize: timeout: timed out after 1s")
        );
        assert_eq!(rec.outcome, Outcome::Timeout);
    }

    #[test]
    fn a_step_in_doubt_without_compensation_undoes_the_ones_before_it() {
        let mut run = held(RunStatus::Running, 2, 2);
        run_apply(
            &mut run,
            Attempted::Transient("down".into()),
            &mut record("confirm", 3),
        );
        assert_eq!((run.status, run.step), (RunStatus::Compensating, 1));
    }

    #[test]
    fn a_failed_action_undoes_only_the_steps_before_it() {
        let mut run = held(RunStatus::Running, 1, 0);
        let applied = run_apply(
            &mut run,
            Attempted::Failed("declined".into()),
            &mut record("authorize", 1),
        );
        assert_eq!((run.status, run.step), (RunStatus::Compensating, 0));
        assert_eq!(applied.lease, Lease::Renew);
        assert_eq!(run.failure.as_deref(), Some("authorize: failed: declined"));

        let mut first = held(RunStatus::Running, 0, 0);
        let applied = run_apply(
            &mut first,
            Attempted::Failed("out of stock".into()),
            &mut record("reserve", 1),
        );
        assert_eq!(
            (first.status, applied.lease),
            (RunStatus::Compensated, Lease::Release),
            "nothing to undo"
        );
    }

    #[test]
    fn compensations_retry_without_limit_and_a_failed_one_is_stuck() {
        let mut run = held(RunStatus::Compensating, 0, 40);
        let applied = run_apply(
            &mut run,
            Attempted::Transient("down".into()),
            &mut record("reserve", 41),
        );
        assert!(matches!(applied.lease, Lease::ReleaseFor(_)));
        assert_eq!((run.status, run.attempts), (RunStatus::Compensating, 41));

        let applied = run_apply(
            &mut run,
            Attempted::Failed("unknown".into()),
            &mut record("reserve", 42),
        );
        assert_eq!(
            (run.status, applied.lease),
            (RunStatus::Stuck, Lease::Release)
        );
        assert_eq!(applied.last_error.as_deref(), Some("reserve: unknown"));

        let mut last = held(RunStatus::Compensating, 0, 0);
        let applied = run_apply(&mut last, Attempted::Done(1), &mut record("reserve", 1));
        assert_eq!(
            (last.status, last.step, applied.lease),
            (RunStatus::Compensated, -1, Lease::Release)
        );
    }

    #[test]
    fn compensation_only_steps_are_skipped_forward_and_run_backward() {
        let noop = |i: StepInput<u32>| futures::future::ready(Ok(i.data)).boxed();
        let saga = Saga::new("order")
            .compensation("cancel", noop)
            .compensated_step("reserve", noop, noop)
            .step("confirm", noop);
        let mut fresh = held(RunStatus::Running, 0, 0);
        settle(&mut fresh, &saga.steps).unwrap();
        assert_eq!((fresh.status, fresh.step), (RunStatus::Running, 1));

        let mut run = held(RunStatus::Running, 1, 0);
        let mut rec = record("reserve", 1);
        let policy = policy();
        let failed = Attempted::Failed("out of stock".into());
        let applied = apply(
            &mut run,
            &saga.steps,
            &policy,
            Duration::from_secs(1),
            failed,
            &mut rec,
        );
        assert_eq!(
            (run.status, run.step, applied.lease),
            (RunStatus::Compensating, 0, Lease::Renew)
        );
    }

    #[test]
    fn positions_that_make_no_sense_are_refused() {
        let saga = saga();
        assert!(settle(&mut held(RunStatus::Running, -1, 0), &saga.steps).is_err());
        assert!(settle(&mut held(RunStatus::Compensating, 3, 0), &saga.steps).is_err());
        let mut beyond = held(RunStatus::Running, 3, 0);
        assert!(settle(&mut beyond, &saga.steps).is_ok());
        assert_eq!(beyond.status, RunStatus::Completed);
    }
}
