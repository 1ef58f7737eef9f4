//! PostgreSQL: the pool a service uses, start-up migrations, and its readiness check.

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};

use crate::{RuntimeError, config::DatabaseConfig, readiness::ReadinessCheck};

/// A pool that connects lazily: the service starts (and reports NOT_SERVING) while the
/// database is away, and recovers on its own when it returns.
pub fn connect_lazy(config: &DatabaseConfig) -> Result<PgPool, RuntimeError> {
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&config.database_url)
        .map_err(|source| RuntimeError::Database {
            context: "invalid DATABASE_URL",
            source,
        })
}

/// Runs `migrator`, retrying while the database is unreachable, for at most `patience`.
pub async fn migrate(
    pool: &PgPool,
    migrator: &Migrator,
    patience: Duration,
) -> Result<(), RuntimeError> {
    let give_up_at = tokio::time::Instant::now() + patience;
    let mut delay = Duration::from_millis(100);
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(source))
                if is_connection_error(&source) && tokio::time::Instant::now() < give_up_at =>
            {
                tracing::warn!(error = %source, ?delay, "database not reachable for migrations; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(source) => return Err(RuntimeError::Migrate(source)),
        }
    }
}

/// Whether `err` says the database could not be reached (as opposed to refusing a query).
#[must_use]
pub fn is_connection_error(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
    )
}

/// The status for a failed database call: `UNAVAILABLE` (the caller may retry) when the
/// database could not be reached, else an opaque `INTERNAL` with the cause in the log.
#[must_use]
pub fn error_status(err: &sqlx::Error, database: &str) -> tonic::Status {
    if is_connection_error(err) {
        tracing::warn!(error = %err, database, "database unavailable");
        crate::status::unavailable(&format!("{database} database unavailable"))
    } else {
        crate::status::internal(err)
    }
}

/// Ready while `SELECT 1` succeeds on the pool.
#[derive(Debug, Clone)]
pub struct PgReadiness {
    pool: PgPool,
}

impl PgReadiness {
    /// A check against `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl ReadinessCheck for PgReadiness {
    fn name(&self) -> &str {
        "postgres"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(drop)
                .map_err(|err| err.to_string())
        })
    }
}
