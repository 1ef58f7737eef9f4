//! The `outbox` table: writing in the caller's transaction, claiming, lag, retention, and
//! `outbox_dead_letters` for rows the server keeps refusing.

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
///
/// The current span's trace context (W3C `traceparent`, `tracestate`, `baggage`) is stored with
/// the row unless the event carries its own, so the relay's publish, and the consumers after
/// it, continue the trace of the request that wrote the event.
pub async fn add_encoded(tx: &mut PgConnection, event: &EncodedEvent) -> Result<(), OutboxError> {
    let context = if event.headers.contains_key(shop_trace::TRACEPARENT) {
        shop_trace::TraceFields::new()
    } else {
        shop_trace::current_context()
    };
    // The headers are copied only when there is a context to add (traces on).
    let headers = if context.is_empty() {
        serde_json::to_string(&event.headers)?
    } else {
        let mut headers = event.headers.clone();
        headers.extend(context);
        serde_json::to_string(&headers)?
    };
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
    /// Attempts the server refused so far.
    pub(crate) attempts: i32,
    pub(crate) event: EncodedEvent,
}

/// Locks up to `limit` unpublished rows that are due, oldest first, skipping rows other relays
/// hold. A row the server refused waits until its `next_attempt_at`, so it cannot hold back
/// the rows behind it.
pub(crate) async fn claim(tx: &mut PgConnection, limit: i64) -> Result<Vec<Claimed>, OutboxError> {
    let rows = sqlx::query(
        "SELECT id, attempts, event_id, subject, event_type, headers::text AS headers, payload \
         FROM outbox WHERE published_at IS NULL \
         AND (next_attempt_at IS NULL OR next_attempt_at <= now()) \
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
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
                attempts: row.try_get("attempts")?,
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

/// Counts an attempt the server refused for the row itself (in the claiming transaction); the
/// row is not claimed again for `retry_in`.
pub(crate) async fn record_failure(
    tx: &mut PgConnection,
    id: i64,
    error: &str,
    retry_in: Duration,
) -> Result<(), OutboxError> {
    sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2, \
         next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(retry_in.as_secs_f64())
    .execute(tx)
    .await?;
    Ok(())
}

/// Moves a row to `outbox_dead_letters` with `error`, counting this last attempt.
pub(crate) async fn park(tx: &mut PgConnection, id: i64, error: &str) -> Result<(), OutboxError> {
    sqlx::query(
        "WITH moved AS (DELETE FROM outbox WHERE id = $1 RETURNING \
           id, event_id, subject, event_type, headers, payload, created_at, attempts) \
         INSERT INTO outbox_dead_letters \
           (id, event_id, subject, event_type, headers, payload, created_at, attempts, error) \
         SELECT id, event_id, subject, event_type, headers, payload, created_at, attempts + 1, $2 \
         FROM moved",
    )
    .bind(id)
    .bind(error)
    .execute(tx)
    .await?;
    Ok(())
}

/// A row the relay parked: the server refused it `attempts` times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event's id.
    pub event_id: Uuid,
    /// Its subject.
    pub subject: String,
    /// Its full protobuf type name.
    pub event_type: String,
    /// Refused attempts.
    pub attempts: i32,
    /// The last refusal.
    pub error: String,
}

/// Rows parked in `outbox_dead_letters` (metrics, status).
pub async fn dead_letter_count(pool: &PgPool) -> Result<i64, OutboxError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM outbox_dead_letters")
            .fetch_one(pool)
            .await?,
    )
}

/// Parked rows, oldest first, at most `limit`.
pub async fn dead_letters(pool: &PgPool, limit: i64) -> Result<Vec<DeadLetter>, OutboxError> {
    let rows = sqlx::query(
        "SELECT event_id, subject, event_type, attempts, error FROM outbox_dead_letters \
         ORDER BY parked_at, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DeadLetter {
                event_id: row.try_get("event_id")?,
                subject: row.try_get("subject")?,
                event_type: row.try_get("event_type")?,
                attempts: row.try_get("attempts")?,
                error: row.try_get("error")?,
            })
        })
        .collect()
}

/// Moves a parked event back into the outbox (its old id, attempts reset) once its cause is
/// fixed, and wakes the relay. Returns whether the event id was parked.
pub async fn requeue_dead_letter(pool: &PgPool, event_id: Uuid) -> Result<bool, OutboxError> {
    let mut tx = pool.begin().await?;
    let moved = sqlx::query(
        "WITH moved AS (DELETE FROM outbox_dead_letters WHERE event_id = $1 RETURNING \
           id, event_id, subject, event_type, headers, payload, created_at) \
         INSERT INTO outbox (id, event_id, subject, event_type, headers, payload, created_at) \
         OVERRIDING SYSTEM VALUE \
         SELECT id, event_id, subject, event_type, headers, payload, created_at FROM moved",
    )
    .bind(event_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(moved == 1)
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
    let updated = sqlx::query(
        "UPDATE outbox SET published_at = NULL, attempts = 0, last_error = NULL, \
         next_attempt_at = NULL WHERE event_id = $1",
    )
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
