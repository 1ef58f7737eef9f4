//! Gauges for a service's `/metrics`. The crate picks no registry (it does not depend on the
//! service kit): a service registers them in its own, e.g.
//! `builder.metrics().with_registry(|r| relay_metrics.register(r))`, and hands them to
//! [`crate::Relay::with_metrics`], which refreshes them while it runs.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;

use crate::OutboxError;
use crate::store;

/// The outbox's gauges. Cheap to clone; clones share values.
#[derive(Debug, Clone, Default)]
pub struct RelayMetrics {
    parked: Gauge,
    unpublished: Gauge,
    oldest_age: Gauge<f64, AtomicU64>,
}

impl RelayMetrics {
    /// Registers `outbox_parked`, `outbox_unpublished` and `outbox_oldest_unpublished_age_seconds`
    /// (the registry adds its prefix: `shop_outbox_parked` with shop_runtime's).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "outbox_parked",
            "Outbox rows parked in outbox_dead_letters: refused by the server too often",
            self.parked.clone(),
        );
        registry.register(
            "outbox_unpublished",
            "Outbox rows waiting for the relay",
            self.unpublished.clone(),
        );
        registry.register_with_unit(
            "outbox_oldest_unpublished_age",
            "Age of the oldest outbox row waiting for the relay (0 when none waits)",
            prometheus_client::registry::Unit::Seconds,
            self.oldest_age.clone(),
        );
    }

    /// Age of the oldest unpublished row at the last refresh, in seconds.
    pub fn oldest_unpublished_age(&self) -> f64 {
        self.oldest_age.get()
    }

    /// Parked rows at the last refresh.
    pub fn parked(&self) -> i64 {
        self.parked.get()
    }

    /// Unpublished rows at the last refresh.
    pub fn unpublished(&self) -> i64 {
        self.unpublished.get()
    }

    /// Reads both counts from the database.
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), OutboxError> {
        let lag = store::lag(pool).await?;
        let parked = store::dead_letter_count(pool).await?;
        self.unpublished.set(lag.unpublished);
        self.oldest_age.set(lag.oldest_age.as_secs_f64());
        self.parked.set(parked);
        Ok(())
    }
}
