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
//! [`MIGRATOR`] holds the table's versioned sqlx migrations (`crates/events/migrations`, in
//! the range 1_001_000..1_002_000 reserved for this crate, so they never collide with a
//! service's own `0001_...` files in the shared `_sqlx_migrations` table). A service runs it
//! together with its own migrator (`shop_runtime::db::migrate_with`); [`migrate`] runs it
//! alone.

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, Migrator};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::EventsError;

/// The inbox's versioned migrations (`crates/events/migrations`, versions 1_001_000 to
/// 1_001_999). A service lists it beside its own migrator:
/// `db::migrate_with(&pool, &MIGRATOR, &[&shop_events::inbox::MIGRATOR], patience)`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Applies [`MIGRATOR`] on its own (tests, tools, a database without a service migrator).
/// Versions of other migrators already in `_sqlx_migrations` are left alone; sqlx's migration
/// lock makes it safe from many replicas at once.
pub async fn migrate(pool: &PgPool) -> Result<(), EventsError> {
    let migrate = async {
        let mut migrator = Migrator::new(Resolved(MIGRATOR.iter().cloned().collect())).await?;
        migrator.set_ignore_missing(true);
        migrator.run(pool).await
    };
    migrate
        .await
        .map_err(|e| EventsError::Inbox(sqlx::Error::Migrate(Box::new(e))))
}

/// Migrations already resolved (from [`MIGRATOR`]), as a source for a migrator of our own.
#[derive(Debug)]
struct Resolved(Vec<Migration>);

impl MigrationSource<'static> for Resolved {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
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
