//! `db::migrate_with` against a real PostgreSQL: a service's migrator and libraries' ones share
//! `_sqlx_migrations` without colliding, a second run applies nothing, and unknown versions
//! stop the start only outside the libraries' range.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use shop_runtime::{RuntimeError, db};
use shop_testkit::Postgres;
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

const PATIENCE: Duration = Duration::from_secs(10);

/// A migrator over `files` (name, SQL) written to a fresh directory.
async fn migrator(files: &[(&str, &str)]) -> Result<Migrator> {
    let dir = tempfile::tempdir()?;
    for (name, sql) in files {
        std::fs::write(dir.path().join(name), sql)?;
    }
    Ok(Migrator::new(Path::new(dir.path())).await?)
}

struct Fixture {
    service: Migrator,
    inbox: Migrator,
    outbox: Migrator,
}

const INBOX: (&str, &str) = ("1001001_inbox.sql", "CREATE TABLE inbox (at int);");

async fn fixture() -> Result<Fixture> {
    Ok(Fixture {
        // 0002 builds on a library table: libraries must run first.
        service: migrator(&[
            ("0001_users.sql", "CREATE TABLE users (id int PRIMARY KEY);"),
            (
                "0002_inbox_index.sql",
                "CREATE INDEX inbox_by_time ON inbox (at);",
            ),
        ])
        .await?,
        inbox: migrator(&[INBOX]).await?,
        outbox: migrator(&[
            ("1002001_outbox.sql", "CREATE TABLE outbox (id int);"),
            (
                "1002002_outbox_attempts.sql",
                "ALTER TABLE outbox ADD attempts int;",
            ),
        ])
        .await?,
    })
}

async fn applied(pool: &PgPool) -> Result<Vec<i64>> {
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await?,
    )
}

#[tokio::test]
async fn service_and_library_migrations_apply_once_and_rerun_harmlessly() -> Result<()> {
    let pg = Postgres::start().await?;
    let pool = PgPool::connect(&pg.fresh_database().await?).await?;
    let f = fixture().await?;
    for _ in 0..2 {
        db::migrate_with(&pool, &f.service, &[&f.inbox, &f.outbox], PATIENCE).await?;
    }
    assert_eq!(
        applied(&pool).await?,
        vec![1, 2, 1_001_001, 1_002_001, 1_002_002]
    );

    // The service's own migrator alone still starts: library versions are not "missing".
    db::migrate(&pool, &f.service, PATIENCE).await?;
    // A library run on its own (what its `migrate(pool)` does), then the service again.
    let mut alone = migrator(&[INBOX]).await?;
    alone.set_ignore_missing(true);
    alone.run(&pool).await?;
    db::migrate_with(&pool, &f.service, &[&f.inbox, &f.outbox], PATIENCE).await?;
    assert_eq!(applied(&pool).await?.len(), 5);
    Ok(())
}

#[tokio::test]
async fn unknown_service_versions_and_duplicates_are_refused() -> Result<()> {
    let pg = Postgres::start().await?;
    let pool = PgPool::connect(&pg.fresh_database().await?).await?;
    let f = fixture().await?;
    db::migrate_with(&pool, &f.service, &[&f.inbox, &f.outbox], PATIENCE).await?;

    // A newer build applied 0003: this build must not start on that database.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (3, 'newer', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await?;
    let Err(err) = db::migrate_with(&pool, &f.service, &[&f.inbox, &f.outbox], PATIENCE).await
    else {
        bail!("an unknown service version was accepted");
    };
    assert!(
        matches!(err, RuntimeError::Migrate(MigrateError::VersionMissing(3))),
        "{err:?}"
    );

    // Two migrators claiming one version is a bug in the listing, caught before running.
    let clash = migrator(&[("1001001_other.sql", "SELECT 1;")]).await?;
    let Err(err) = db::migrate_with(&pool, &f.service, &[&f.inbox, &clash], PATIENCE).await else {
        bail!("two migrators with one version were accepted");
    };
    assert!(
        matches!(err, RuntimeError::Migrate(MigrateError::Source(_))),
        "{err:?}"
    );
    Ok(())
}
