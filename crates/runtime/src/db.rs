//! PostgreSQL: the pool a service uses, start-up migrations, and its readiness check.

use std::{collections::HashSet, ops::Range, time::Duration};

use futures::future::BoxFuture;
use sqlx::{
    PgPool,
    error::BoxDynError,
    migrate::{MigrateError, Migration, MigrationSource, Migrator},
    postgres::PgPoolOptions,
};

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

/// Versions reserved for the shared libraries' migrations (`shop-events` inbox 1_001_xxx,
/// `shop-outbox` 1_002_xxx, `shop-saga` 1_003_xxx, a new library the next thousand). A
/// service's own files stay below (`0001_...`) or use sqlx's timestamp versions (above).
pub const LIBRARY_VERSIONS: Range<i64> = 1_000_000..2_000_000;

/// Runs `migrator`, retrying while the database is unreachable, for at most `patience`.
/// The same as [`migrate_with`] without libraries.
pub async fn migrate(
    pool: &PgPool,
    migrator: &Migrator,
    patience: Duration,
) -> Result<(), RuntimeError> {
    migrate_with(pool, migrator, &[], patience).await
}

/// Runs the `libraries`' migrations (in the order given), then the `service`'s own, as one
/// sqlx migrator under one lock, retrying while the database is unreachable, for at most
/// `patience`. Safe from every replica at once; a second run applies nothing.
///
/// ```ignore
/// db::migrate_with(&pool, &MIGRATOR, &[&shop_outbox::MIGRATOR], patience).await?;
/// ```
///
/// Libraries go first so that a service migration may build on a library's table. Like
/// sqlx, an applied version that none of the migrators knows stops the start (the database
/// is newer than this build), except in [`LIBRARY_VERSIONS`]: those belong to a library this
/// service does not list, or to a newer build of one during a rolling deploy.
pub async fn migrate_with(
    pool: &PgPool,
    service: &Migrator,
    libraries: &[&Migrator],
    patience: Duration,
) -> Result<(), RuntimeError> {
    let migrator = combine(service, libraries)
        .await
        .map_err(RuntimeError::Migrate)?;
    let give_up_at = tokio::time::Instant::now() + patience;
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = async {
            check_applied(pool, &migrator).await?;
            migrator.run(pool).await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(MigrateError::Execute(source))
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

/// One migrator over the libraries' migrations and then the service's. It ignores unknown
/// applied versions: [`check_applied`] does that check, with the library exception.
async fn combine(service: &Migrator, libraries: &[&Migrator]) -> Result<Migrator, MigrateError> {
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    for migration in libraries
        .iter()
        .flat_map(|m| m.iter())
        .chain(service.iter())
    {
        if !seen.insert((
            migration.version,
            migration.migration_type.is_down_migration(),
        )) {
            return Err(MigrateError::Source(
                format!(
                    "migration version {} is in two migrators",
                    migration.version
                )
                .into(),
            ));
        }
        all.push(migration.clone());
    }
    let mut migrator = Migrator::new(Resolved(all)).await?;
    migrator.set_ignore_missing(true);
    Ok(migrator)
}

/// Fails with `VersionMissing` for an applied version outside [`LIBRARY_VERSIONS`] that
/// `migrator` does not know.
async fn check_applied(pool: &PgPool, migrator: &Migrator) -> Result<(), MigrateError> {
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
        .fetch_all(pool)
        .await
        .or_else(|err| match &err {
            // undefined_table: a fresh database, nothing applied yet.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(Vec::new()),
            _ => Err(err),
        })?;
    match unknown_applied(&applied, migrator) {
        Some(version) => Err(MigrateError::VersionMissing(version)),
        None => Ok(()),
    }
}

/// The first applied version outside [`LIBRARY_VERSIONS`] that `migrator` does not know.
fn unknown_applied(applied: &[i64], migrator: &Migrator) -> Option<i64> {
    applied
        .iter()
        .copied()
        .find(|v| !LIBRARY_VERSIONS.contains(v) && !migrator.version_exists(*v))
}

/// Migrations already resolved (taken from `sqlx::migrate!` migrators), as a source.
#[derive(Debug)]
struct Resolved(Vec<Migration>);

impl MigrationSource<'static> for Resolved {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
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
