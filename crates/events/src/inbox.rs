//! The idempotent-consumer inbox on Postgres.
//!
//! A handler claims the event id inside the transaction that applies its effect:
//!
//! ```ignore
//! let mut tx = pool.begin().await?;
//! if !inbox.claim(&mut tx, delivery.meta.id).await? {
//!     return Ok(()); // applied before: ack without a second effect
//! }
//! apply_effect(&mut tx, &delivery.event).await?;
//! tx.commit().await?;
//! Ok(())
//! ```
//!
//! If the transaction rolls back, the claim rolls back with it. If two deliveries of one event
//! race, the second insert waits on the primary key until the first commits, then finds it.
//!
//! ## Schema
//!
//! [`MIGRATION_SQL`] (`crates/events/migrations/inbox.sql`) is idempotent DDL. A service runs it
//! with [`migrate`] right after its own `sqlx::migrate!()` when `MIGRATE_ON_START` is set; it
//! is kept out of the service's sqlx migrator so that version numbers never collide.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::EventsError;

/// DDL of the `inbox` table (idempotent).
pub const MIGRATION_SQL: &str = include_str!("../migrations/inbox.sql");

/// Creates the `inbox` table if missing. Safe to run from many replicas at once (serialized by
/// an advisory lock) and at every start.
pub async fn migrate(pool: &PgPool) -> Result<(), EventsError> {
    let mut tx = pool.begin().await?;
    // Concurrent CREATE TABLE IF NOT EXISTS can still collide on the catalog; serialize.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('shop-events-inbox'))")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(MIGRATION_SQL).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// The inbox of one durable consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbox {
    consumer: String,
}

impl Inbox {
    /// The inbox of `consumer` (use the durable consumer name).
    pub fn new(consumer: impl Into<String>) -> Self {
        Self {
            consumer: consumer.into(),
        }
    }

    /// Records `event_id` as processed in the caller's transaction. `true`: first time, apply
    /// the effect; `false`: already applied, do nothing and ack.
    pub async fn claim(&self, tx: &mut PgConnection, event_id: Uuid) -> Result<bool, EventsError> {
        let inserted = sqlx::query(
            "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&self.consumer)
        .bind(event_id)
        .execute(tx)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Whether `event_id` was processed (outside a handler: tests, tooling).
    pub async fn contains(&self, pool: &PgPool, event_id: Uuid) -> Result<bool, EventsError> {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM inbox WHERE consumer = $1 AND event_id = $2")
                .bind(&self.consumer)
                .bind(event_id)
                .fetch_optional(pool)
                .await?;
        Ok(found.is_some())
    }

    /// Deletes entries older than `retention` (keep it well above the stream's max age plus
    /// any republish horizon, or an old redelivery could apply twice). Returns rows deleted.
    pub async fn purge_older_than(
        &self,
        pool: &PgPool,
        retention: Duration,
    ) -> Result<u64, EventsError> {
        let deleted = sqlx::query(
            "DELETE FROM inbox WHERE consumer = $1 \
             AND processed_at < now() - make_interval(secs => $2)",
        )
        .bind(&self.consumer)
        .bind(retention.as_secs_f64())
        .execute(pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }
}
