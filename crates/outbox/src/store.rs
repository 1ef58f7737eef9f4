//! The `outbox` table: writing in the caller's transaction, claiming, lag and retention.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use shop_events::{EncodedEvent, EventEnvelope};
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, Migrator};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::OutboxError;

/// The outbox's versioned migrations (`crates/outbox/migrations`, versions 1_002_000 to
/// 1_002_999). A service lists it beside its own migrator:
/// `db::migrate_with(&pool, &MIGRATOR, &[&shop_outbox::MIGRATOR], patience)`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The channel `add` notifies and the relay listens on.
pub const NOTIFY_CHANNEL: &str = "shop_outbox";

/// Applies [`MIGRATOR`] on its own (tests, tools, a database without a service migrator).
/// Versions of other migrators already in `_sqlx_migrations` are left alone; sqlx's migration
/// lock makes it safe from many replicas at once.
pub async fn migrate(pool: &PgPool) -> Result<(), OutboxError> {
    let migrate = async {
        let mut migrator = Migrator::new(Resolved(MIGRATOR.iter().cloned().collect())).await?;
        migrator.set_ignore_missing(true);
        migrator.run(pool).await
    };
    migrate
        .await
        .map_err(|e| OutboxError::Database(sqlx::Error::Migrate(Box::new(e))))
}

/// Migrations already resolved (from [`MIGRATOR`]), as a source for a migrator of our own.
#[derive(Debug)]
struct Resolved(Vec<Migration>);

impl MigrationSource<'static> for Resolved {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

/// Writes `event` to the outbox inside the caller's transaction and notifies the relay (the
/// notification is delivered only if and when the transaction commits). Pass `&mut tx`.
pub async fn add<E>(tx: &mut PgConnection, event: &EventEnvelope<E>) -> Result<(), OutboxError>
where
    E: prost::Message + prost::Name,
{
    add_encoded(tx, &event.encode()?).await
}

/// [`add`] for an already encoded event.
pub async fn add_encoded(tx: &mut PgConnection, event: &EncodedEvent) -> Result<(), OutboxError> {
    let headers = serde_json::to_string(&event.headers)?;
    sqlx::query(
        "INSERT INTO outbox (event_id, subject, event_type, headers, payload) \
         VALUES ($1, $2, $3, $4::jsonb, $5)",
    )
    .bind(event.id)
    .bind(&event.subject)
    .bind(&event.event_type)
    .bind(headers)
    .bind(event.payload.as_ref())
    .execute(&mut *tx)
    .await?;
    // Identical notifications in one transaction are folded into one by Postgres.
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A claimed row.
pub(crate) struct Claimed {
    pub(crate) id: i64,
    pub(crate) event: EncodedEvent,
}

/// Locks up to `limit` unpublished rows, oldest first, skipping rows other relays hold.
pub(crate) async fn claim(tx: &mut PgConnection, limit: i64) -> Result<Vec<Claimed>, OutboxError> {
    let rows = sqlx::query(
        "SELECT id, event_id, subject, event_type, headers::text AS headers, payload \
         FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(tx)
    .await?;
    rows.iter()
        .map(|row| {
            let headers: String = row.try_get("headers")?;
            let headers: BTreeMap<String, String> = serde_json::from_str(&headers)?;
            let payload: Vec<u8> = row.try_get("payload")?;
            Ok(Claimed {
                id: row.try_get("id")?,
                event: EncodedEvent {
                    id: row.try_get("event_id")?,
                    subject: row.try_get("subject")?,
                    event_type: row.try_get("event_type")?,
                    headers,
                    payload: Bytes::from(payload),
                },
            })
        })
        .collect()
}

/// Marks rows published (in the claiming transaction).
pub(crate) async fn mark_published(tx: &mut PgConnection, ids: &[i64]) -> Result<(), OutboxError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(tx)
        .await?;
    Ok(())
}

/// How far the relay is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLag {
    /// Rows not yet published.
    pub unpublished: i64,
    /// Age of the oldest unpublished row; zero when there is none.
    pub oldest_age: Duration,
}

/// The relay's lag, for metrics and readiness.
pub async fn lag(pool: &PgPool) -> Result<OutboxLag, OutboxError> {
    let row = sqlx::query(
        "SELECT count(*) AS unpublished, \
         COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest \
         FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(pool)
    .await?;
    let oldest: f64 = row.try_get("oldest")?;
    Ok(OutboxLag {
        unpublished: row.try_get("unpublished")?,
        oldest_age: Duration::try_from_secs_f64(oldest.max(0.0)).unwrap_or_default(),
    })
}

/// Deletes rows published longer ago than `retention`, at most `limit` per call (call again
/// while it returns `limit`). Returns rows deleted.
pub async fn purge_published(
    pool: &PgPool,
    retention: Duration,
    limit: i64,
) -> Result<u64, OutboxError> {
    let deleted = sqlx::query(
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
         WHERE published_at < now() - make_interval(secs => $1) LIMIT $2)",
    )
    .bind(retention.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(deleted)
}

/// Queues an already published event for publishing again (Postgres is the source of truth:
/// e.g. after a stream was lost). JetStream's duplicate window and consumers' inboxes make a
/// repeat harmless. Returns whether the event id was found.
pub async fn republish(pool: &PgPool, event_id: Uuid) -> Result<bool, OutboxError> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query("UPDATE outbox SET published_at = NULL WHERE event_id = $1")
        .bind(event_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(updated == 1)
}
