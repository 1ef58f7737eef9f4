//! Gauges for a service's `/metrics`. The crate picks no registry (it does not depend on the
//! service kit): a service registers them in its own, e.g.
//! `builder.metrics().with_registry(|r| relay_metrics.register(r))`, and hands them to
//! [`crate::Relay::with_metrics`], which refreshes them while it runs.

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
}

impl RelayMetrics {
    /// Registers `outbox_parked` and `outbox_unpublished` (the registry adds its prefix:
    /// `shop_outbox_parked` with shop_runtime's).
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
        self.parked.set(parked);
        Ok(())
    }
}
