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
//! One inbox per durable consumer (its scope is the durable name): consumers of one service
//! never share entries, and each is purged on its own. [`purge_until`] deletes entries older
//! than an [`InboxRetention`] that [`InboxRetention::validate`] has checked outlasts the
//! streams' duplicate window and max age.
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

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, Migrator};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::EventsError;
use crate::provision::StreamSpec;

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
    /// any republish horizon, or an old redelivery could apply twice; [`InboxRetention`]
    /// checks that). Deletes in batches so no transaction grows large. Returns rows deleted.
    pub async fn purge_older_than(
        &self,
        pool: &PgPool,
        retention: Duration,
    ) -> Result<u64, EventsError> {
        const BATCH: i64 = 10_000;
        let mut total = 0;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM inbox WHERE consumer = $1 AND event_id IN (\
                 SELECT event_id FROM inbox WHERE consumer = $1 \
                 AND processed_at < now() - make_interval(secs => $2) LIMIT $3)",
            )
            .bind(&self.consumer)
            .bind(retention.as_secs_f64())
            .bind(BATCH)
            .execute(pool)
            .await?
            .rows_affected();
            total += deleted;
            if deleted < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                return Ok(total);
            }
        }
    }

    /// The scope of this inbox: the durable consumer's name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }
}

/// How long a consumer's inbox entries are kept, and how often older ones are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxRetention {
    /// Entries older than this are deleted.
    pub keep: Duration,
    /// Time between purges.
    pub purge_every: Duration,
}

impl Default for InboxRetention {
    /// Eight days (the context streams keep seven), purged hourly.
    fn default() -> Self {
        Self {
            keep: Duration::from_secs(8 * 24 * 3600),
            purge_every: Duration::from_secs(3600),
        }
    }
}

/// An [`InboxRetention`] that would let a redelivery apply twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    /// `keep` does not outlast what a stream can still deliver or deduplicate.
    #[error("inbox retention {keep:?} must be longer than stream {stream}'s {limit} ({value:?})")]
    TooShort {
        /// The retention asked for.
        keep: Duration,
        /// The stream that outlasts it.
        stream: String,
        /// `duplicate window` or `max age`.
        limit: &'static str,
        /// The stream's value.
        value: Duration,
    },
    /// The stream keeps messages forever: no retention is safe.
    #[error(
        "stream {0} keeps messages forever (max age 0); its consumers' inboxes must not be purged"
    )]
    Unbounded(String),
    /// A purge interval of zero.
    #[error("inbox purge interval must be greater than zero")]
    NoInterval,
}

impl InboxRetention {
    /// Checks that `keep` outlasts, for every stream the inboxes' consumers read, the
    /// duplicate window (a republish inside it is dropped by JetStream; after it only the
    /// inbox catches it) and the max age (a message can be redelivered as long as the stream
    /// holds it, and must still find its entry).
    pub fn validate(&self, streams: &[StreamSpec]) -> Result<(), RetentionError> {
        if self.purge_every.is_zero() {
            return Err(RetentionError::NoInterval);
        }
        for stream in streams {
            if stream.max_age.is_zero() {
                return Err(RetentionError::Unbounded(stream.name.clone()));
            }
            for (limit, value) in [
                ("duplicate window", stream.duplicate_window),
                ("max age", stream.max_age),
            ] {
                if self.keep <= value {
                    return Err(RetentionError::TooShort {
                        keep: self.keep,
                        stream: stream.name.clone(),
                        limit,
                        value,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Purges `inboxes` of entries older than `retention.keep`, at once and then every
/// `retention.purge_every`, until `shutdown` resolves. A failed purge is logged and tried again
/// at the next tick. Run it beside the consumers (validate `retention` first).
pub async fn purge_until(
    pool: PgPool,
    inboxes: Vec<Inbox>,
    retention: InboxRetention,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut ticks = tokio::time::interval(retention.purge_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut shutdown => return,
        }
        for inbox in &inboxes {
            match inbox.purge_older_than(&pool, retention.keep).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(consumer = inbox.consumer(), deleted, "inbox purged");
                }
                Err(e) => {
                    tracing::warn!(consumer = inbox.consumer(), error = %e, "inbox purge failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retention(days: u64) -> InboxRetention {
        InboxRetention {
            keep: Duration::from_secs(days * 24 * 3600),
            purge_every: Duration::from_secs(60),
        }
    }

    #[test]
    fn retention_must_outlast_duplicate_window_and_max_age() {
        let streams = [StreamSpec::for_context("identity")];
        assert_eq!(retention(8).validate(&streams), Ok(()));
        assert!(matches!(
            retention(7).validate(&streams),
            Err(RetentionError::TooShort {
                limit: "max age",
                ..
            })
        ));
        let mut short_age = StreamSpec::for_context("orders");
        short_age.max_age = Duration::from_secs(60);
        let tiny = InboxRetention {
            keep: Duration::from_secs(120),
            purge_every: Duration::from_secs(60),
        };
        assert!(matches!(
            tiny.validate(&[short_age]),
            Err(RetentionError::TooShort {
                limit: "duplicate window",
                ..
            })
        ));
        let mut forever = StreamSpec::for_context("orders");
        forever.max_age = Duration::ZERO;
        assert!(matches!(
            retention(30).validate(&[forever]),
            Err(RetentionError::Unbounded(_))
        ));
        let never = InboxRetention {
            purge_every: Duration::ZERO,
            ..retention(8)
        };
        assert_eq!(never.validate(&[]), Err(RetentionError::NoInterval));
    }
}
