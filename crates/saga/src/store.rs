//! The `saga_runs` table: starting a run inside the caller's transaction, and reading one.

use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, Migrator};
use sqlx::{PgConnection, PgPool, Row};
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
    /// A compensation failed for good; an operator must look.
    Stuck,
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
}

// === impl RunStatus ===

impl RunStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Stuck => "stuck",
        }
    }

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
/// Starting the same `id` again is a no-op; returns whether this call created the run.
pub async fn start<D: Serialize>(
    tx: &mut PgConnection,
    kind: &str,
    id: Uuid,
    data: &D,
) -> Result<bool, SagaError> {
    let data = serde_json::to_string(data)?;
    let created = sqlx::query(
        "INSERT INTO saga_runs (id, kind, data, status) VALUES ($1, $2, $3::jsonb, 'running') \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(kind)
    .bind(data)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if created {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(kind)
            .execute(&mut *tx)
            .await?;
    }
    Ok(created)
}

/// The run `id`, if it exists.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Run>, SagaError> {
    let row = sqlx::query(
        "SELECT id, kind, status, step, attempts, data::text AS data, failure, last_error \
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
        })
    })
    .transpose()
}
