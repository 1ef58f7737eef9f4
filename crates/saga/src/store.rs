//! The `saga_runs` and `saga_steps` tables: starting a run inside the caller's transaction,
//! reading runs and their step history, and the operator's view (counts per status, stuck runs,
//! putting a stuck run back).

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, Migrator};
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SagaError;

/// The saga table's versioned migrations (`crates/saga/migrations`, versions 1_003_000 to
/// 1_003_999). A service lists it beside its own migrator:
/// `db::migrate_with(&pool, &MIGRATOR, &[&shop_saga::MIGRATOR], patience)`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The channel [`start`] notifies and workers listen on.
pub const NOTIFY_CHANNEL: &str = "shop_saga";

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Steps are being run forward.
    Running,
    /// A step failed; completed steps are being undone in reverse.
    Compensating,
    /// Every step ran.
    Completed,
    /// Every completed step was undone.
    Compensated,
    /// A compensation failed for good, or the run's state is unreadable: an operator must look
    /// ([`stuck`], [`retry_stuck`]). Never picked up by a worker.
    Stuck,
}

/// Whether a step-history row is an action or a compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The step's action.
    Action,
    /// The step's compensation.
    Compensation,
}

/// How one attempt of an action or compensation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It completed.
    Ok,
    /// [`StepError::Transient`](crate::StepError::Transient): outcome unknown.
    Transient,
    /// [`StepError::Failed`](crate::StepError::Failed): definitely not applied.
    Failed,
    /// It exceeded [`WorkerConfig::step_timeout`](crate::WorkerConfig::step_timeout) and was
    /// dropped: outcome unknown.
    Timeout,
    /// The worker found it no longer held the run (while the attempt ran, or when it tried to
    /// record it): nothing of the attempt was recorded on the run.
    LeaseLost,
}

/// One row of a run's step history ([`timeline`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    /// Order of the rows (increasing over all runs).
    pub seq: i64,
    /// The step's name.
    pub step: String,
    /// Action or compensation.
    pub phase: Phase,
    /// How the attempt ended.
    pub outcome: Outcome,
    /// Its error, if it did not end `ok`.
    pub error: Option<String>,
    /// 1 for the first attempt of this step in this phase.
    pub attempt: i32,
    /// The lease epoch of the claim it ran under.
    pub epoch: i64,
    /// When the attempt started.
    pub started_at: OffsetDateTime,
    /// When it was recorded.
    pub finished_at: OffsetDateTime,
}

/// A run parked as `stuck` ([`stuck`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckRun {
    /// Its id.
    pub id: Uuid,
    /// Why it is stuck (the failed compensation's error, or why its state is unreadable).
    pub error: String,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Its id.
    pub id: Uuid,
    /// The saga kind.
    pub kind: String,
    /// Where it stands.
    pub status: RunStatus,
    /// Running: the next step; compensating: the next step to undo.
    pub step: i32,
    /// Failed attempts of the current step.
    pub attempts: i32,
    /// The data as the last step left it.
    pub data: serde_json::Value,
    /// Why it compensated.
    pub failure: Option<String>,
    /// The last error of any attempt.
    pub last_error: Option<String>,
    /// The worker that claimed it last (`None` when released).
    pub lease_owner: Option<String>,
    /// How many times it has been claimed: the fencing token of the latest claim.
    pub lease_epoch: i64,
}

// === impl RunStatus ===

impl RunStatus {
    /// Its name in the `status` column (`running`, `stuck`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Stuck => "stuck",
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [Self; 5] = [
        Self::Running,
        Self::Compensating,
        Self::Completed,
        Self::Compensated,
        Self::Stuck,
    ];

    pub(crate) fn parse(value: &str) -> Result<Self, SagaError> {
        Ok(match value {
            "running" => Self::Running,
            "compensating" => Self::Compensating,
            "completed" => Self::Completed,
            "compensated" => Self::Compensated,
            "stuck" => Self::Stuck,
            other => return Err(SagaError::Corrupt(format!("unknown status {other:?}"))),
        })
    }

    /// Whether the run has finished (completed, compensated or stuck).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Running | Self::Compensating)
    }
}

// === impl Phase ===

impl Phase {
    /// Its name in the `phase` column: `action` or `compensation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Compensation => "compensation",
        }
    }

    fn parse(value: &str) -> Result<Self, SagaError> {
        Ok(match value {
            "action" => Self::Action,
            "compensation" => Self::Compensation,
            other => return Err(SagaError::Corrupt(format!("unknown phase {other:?}"))),
        })
    }
}

// === impl Outcome ===

impl Outcome {
    /// Its name in the `outcome` column: `ok`, `transient`, `failed`, `timeout`, `lease_lost`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Transient => "transient",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::LeaseLost => "lease_lost",
        }
    }

    fn parse(value: &str) -> Result<Self, SagaError> {
        Ok(match value {
            "ok" => Self::Ok,
            "transient" => Self::Transient,
            "failed" => Self::Failed,
            "timeout" => Self::Timeout,
            "lease_lost" => Self::LeaseLost,
            other => return Err(SagaError::Corrupt(format!("unknown outcome {other:?}"))),
        })
    }
}

// === impl StepRecord ===

impl StepRecord {
    /// How long the attempt took (zero if the clock went backwards).
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::try_from(self.finished_at - self.started_at).unwrap_or_default()
    }
}

/// Applies [`MIGRATOR`] on its own (tests, tools, a database without a service migrator).
/// Versions of other migrators already in `_sqlx_migrations` are left alone; sqlx's migration
/// lock makes it safe from many replicas at once.
pub async fn migrate(pool: &PgPool) -> Result<(), SagaError> {
    let migrate = async {
        let mut migrator = Migrator::new(Resolved(MIGRATOR.iter().cloned().collect())).await?;
        migrator.set_ignore_missing(true);
        migrator.run(pool).await
    };
    migrate
        .await
        .map_err(|e| SagaError::Database(sqlx::Error::Migrate(Box::new(e))))
}

/// Migrations already resolved (from [`MIGRATOR`]), as a source for a migrator of our own.
#[derive(Debug)]
struct Resolved(Vec<Migration>);

impl MigrationSource<'static> for Resolved {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

/// Starts a run of saga `kind` with `data`, inside the caller's transaction (so the run exists
/// iff the business change that implies it committed), and wakes the workers on commit.
/// Starting the same `id` again is a no-op; returns whether this call created the run. The
/// current span's trace context is stored with the run: every step's span is its child.
pub async fn start<D: Serialize>(
    tx: &mut PgConnection,
    kind: &str,
    id: Uuid,
    data: &D,
) -> Result<bool, SagaError> {
    let data = serde_json::to_string(data)?;
    let trace = shop_trace::current_context();
    let trace = (!trace.is_empty())
        .then(|| serde_json::to_string(&trace))
        .transpose()?;
    // One statement: the insert, and the notification only if it inserted.
    let created = sqlx::query(
        "WITH created AS (\
             INSERT INTO saga_runs (id, kind, data, status, trace_context) \
             VALUES ($1, $2, $3::jsonb, 'running', $5::jsonb) \
             ON CONFLICT (id) DO NOTHING RETURNING kind) \
         SELECT pg_notify($4, kind) FROM created",
    )
    .bind(id)
    .bind(kind)
    .bind(data)
    .bind(NOTIFY_CHANNEL)
    .bind(trace)
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    Ok(created)
}

/// The run `id`, if it exists.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Run>, SagaError> {
    let row = sqlx::query(
        "SELECT id, kind, status, step, attempts, data::text AS data, failure, last_error, \
                lease_owner, lease_epoch \
         FROM saga_runs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(Run {
            id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            status: RunStatus::parse(row.try_get("status")?)?,
            step: row.try_get("step")?,
            attempts: row.try_get("attempts")?,
            data: serde_json::from_str(row.try_get("data")?)?,
            failure: row.try_get("failure")?,
            last_error: row.try_get("last_error")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_epoch: row.try_get("lease_epoch")?,
        })
    })
    .transpose()
}

/// How many runs of `kind` are in each status, keyed by [`RunStatus::as_str`]; every status is
/// present (0 if none).
pub async fn counts(pool: &PgPool, kind: &str) -> Result<BTreeMap<String, i64>, SagaError> {
    let mut counts: BTreeMap<String, i64> = RunStatus::ALL
        .iter()
        .map(|status| (status.as_str().to_owned(), 0))
        .collect();
    let rows = sqlx::query(
        "SELECT status, count(*) AS runs FROM saga_runs WHERE kind = $1 GROUP BY status",
    )
    .bind(kind)
    .fetch_all(pool)
    .await?;
    for row in rows {
        counts.insert(row.try_get("status")?, row.try_get("runs")?);
    }
    Ok(counts)
}

/// Up to `limit` stuck runs of `kind`, longest stuck first, with why.
pub async fn stuck(pool: &PgPool, kind: &str, limit: i64) -> Result<Vec<StuckRun>, SagaError> {
    let rows = sqlx::query(
        "SELECT id, COALESCE(last_error, failure, 'unknown') AS error FROM saga_runs \
         WHERE kind = $1 AND status = 'stuck' ORDER BY updated_at, id LIMIT $2",
    )
    .bind(kind)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(StuckRun {
                id: row.try_get("id")?,
                error: row.try_get("error")?,
            })
        })
        .collect()
}

/// Puts the stuck run `id` back, due now: to `compensating` if it had failed (it resumes undoing
/// from the step that was stuck), else to `running` (it resumes at its step), with its attempts
/// reset, and wakes the workers. For an operator, once the cause is fixed (the dependency is
/// back, the data repaired). Returns whether the run was stuck.
pub async fn retry_stuck(pool: &PgPool, id: Uuid) -> Result<bool, SagaError> {
    let retried = sqlx::query(
        "WITH retried AS (\
             UPDATE saga_runs SET \
                 status = CASE WHEN failure IS NULL THEN 'running' ELSE 'compensating' END, \
                 attempts = 0, next_attempt_at = now(), lease_owner = NULL, lease_until = NULL, \
                 updated_at = now() \
             WHERE id = $1 AND status = 'stuck' RETURNING kind) \
         SELECT pg_notify($2, kind) FROM retried",
    )
    .bind(id)
    .bind(NOTIFY_CHANNEL)
    .fetch_optional(pool)
    .await?
    .is_some();
    Ok(retried)
}

/// The step history of run `id`, oldest first: every attempt of every action and compensation.
pub async fn timeline(pool: &PgPool, id: Uuid) -> Result<Vec<StepRecord>, SagaError> {
    let rows = sqlx::query(
        "SELECT seq, step, phase, outcome, error, attempt, epoch, started_at, finished_at \
         FROM saga_steps WHERE run_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(StepRecord {
                seq: row.try_get("seq")?,
                step: row.try_get("step")?,
                phase: Phase::parse(row.try_get("phase")?)?,
                outcome: Outcome::parse(row.try_get("outcome")?)?,
                error: row.try_get("error")?,
                attempt: row.try_get("attempt")?,
                epoch: row.try_get("epoch")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
            })
        })
        .collect()
}

/// Deletes the step history of runs that finished (`completed` or `compensated`) longer than
/// `age` ago; stuck and live runs keep theirs, and the runs themselves stay (they make
/// [`start`] a no-op for their id). For a periodic retention job. Returns the rows deleted.
pub async fn prune_history(pool: &PgPool, age: std::time::Duration) -> Result<u64, SagaError> {
    let deleted = sqlx::query(
        "DELETE FROM saga_steps s USING saga_runs r \
         WHERE s.run_id = r.id AND r.status IN ('completed', 'compensated') \
           AND r.updated_at < now() - make_interval(secs => $1)",
    )
    .bind(age.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(deleted)
}
