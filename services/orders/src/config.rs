//! The orders service's settings.

use std::time::Duration;

use shop_events::{StreamSpec, inbox::InboxRetention};
use shop_runtime::{DatabaseConfig, NatsConfig, RuntimeError, ServerConfig, TelemetryConfig};
use shop_saga::{RetryPolicy, WorkerConfig};

/// Everything the orders service reads at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "orders", about = "The shop's orders service (gRPC)")]
pub struct Config {
    /// Listeners and shutdown.
    #[command(flatten)]
    pub server: ServerConfig,
    /// The orders database (events, read model, sagas, inbox, outbox).
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Where order events go (through the outbox) and shipment events come from.
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// The services orders calls.
    #[command(flatten)]
    pub dependencies: DependenciesConfig,
    /// The saga workers.
    #[command(flatten)]
    pub saga: SagaConfig,
    /// How long the shipment consumer's inbox remembers applied events.
    #[arg(long, env = "INBOX_RETENTION_SECS", default_value_t = 8.0 * 24.0 * 3600.0)]
    pub inbox_retention_secs: f64,
}

/// Addresses and call policy of catalog, inventory and payments.
#[derive(Debug, Clone, clap::Args)]
pub struct DependenciesConfig {
    /// Catalog's gRPC address, `http://host:port`.
    #[arg(long, env = "CATALOG_URL", default_value = "http://127.0.0.1:50052")]
    pub catalog_url: String,
    /// Inventory's gRPC address.
    #[arg(long, env = "INVENTORY_URL", default_value = "http://127.0.0.1:50053")]
    pub inventory_url: String,
    /// Payments' gRPC address.
    #[arg(long, env = "PAYMENTS_URL", default_value = "http://127.0.0.1:50055")]
    pub payments_url: String,
    /// Deadline of a catalog call (PlaceOrder waits for it), retries included, in ms.
    #[arg(long, env = "CATALOG_TIMEOUT_MS", default_value_t = 2000)]
    pub catalog_timeout_ms: u64,
    /// Deadline of an inventory call, in ms.
    #[arg(long, env = "INVENTORY_TIMEOUT_MS", default_value_t = 2000)]
    pub inventory_timeout_ms: u64,
    /// Deadline of a payments call, in ms: longer than payments' own deadline towards the
    /// processor, so that its answer (often "unavailable, retry with the same key") arrives.
    #[arg(long, env = "PAYMENTS_TIMEOUT_MS", default_value_t = 5000)]
    pub payments_timeout_ms: u64,
    /// Consecutive failures that open a dependency's breaker.
    #[arg(long, env = "DEPENDENCY_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// How long an open breaker fails calls fast before probing, in ms.
    #[arg(long, env = "DEPENDENCY_BREAKER_OPEN_MS", default_value_t = 5000)]
    pub breaker_open_ms: u64,
}

impl DependenciesConfig {
    /// Defaults for dependencies at these addresses.
    #[must_use]
    pub fn new(catalog_url: String, inventory_url: String, payments_url: String) -> Self {
        Self {
            catalog_url,
            inventory_url,
            payments_url,
            catalog_timeout_ms: 2000,
            inventory_timeout_ms: 2000,
            payments_timeout_ms: 5000,
            breaker_failures: 5,
            breaker_open_ms: 5000,
        }
    }
}

/// The saga workers: how runs are claimed and how failed attempts are retried.
#[derive(Debug, Clone, clap::Args)]
pub struct SagaConfig {
    /// Prefix of this replica's worker identities in `saga_runs.lease_owner` (a random suffix
    /// keeps replicas with the same name apart); the pod name is a good value.
    #[arg(long, env = "SAGA_WORKER_NAME", default_value = "orders")]
    pub saga_worker_name: String,
    /// Runs one worker drives at once (per replica).
    #[arg(long, env = "SAGA_BATCH", default_value_t = 64)]
    pub saga_batch: i64,
    /// Seconds a claimed run stays this replica's without progress or heartbeat.
    #[arg(long, env = "SAGA_LEASE_SECS", default_value_t = 30.0)]
    pub saga_lease_secs: f64,
    /// Longest one step may take before its outcome counts as unknown, in seconds; shorter
    /// than the lease and longer than the slowest dependency deadline.
    #[arg(long, env = "SAGA_STEP_TIMEOUT_SECS", default_value_t = 10.0)]
    pub saga_step_timeout_secs: f64,
    /// How often to look for due runs without a notification, in ms.
    #[arg(long, env = "SAGA_POLL_MS", default_value_t = 1000)]
    pub saga_poll_ms: u64,
    /// Attempts of a step before the saga compensates. With the default backoff 8 attempts
    /// span about 6 to 13 s: longer than one open period of a dependency's breaker (5 s), so a
    /// breaker that trips during a burst of failures does not cancel orders, while a dependency
    /// that stays down gets them cancelled in well under a minute.
    #[arg(long, env = "SAGA_MAX_ATTEMPTS", default_value_t = 8)]
    pub saga_max_attempts: u32,
    /// Backoff before a step's second attempt, in ms (doubled per attempt, jittered).
    #[arg(long, env = "SAGA_BASE_BACKOFF_MS", default_value_t = 200)]
    pub saga_base_backoff_ms: u64,
    /// Longest backoff between attempts, in ms.
    #[arg(long, env = "SAGA_MAX_BACKOFF_MS", default_value_t = 30_000)]
    pub saga_max_backoff_ms: u64,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            saga_worker_name: "orders".into(),
            saga_batch: 64,
            saga_lease_secs: 30.0,
            saga_step_timeout_secs: 10.0,
            saga_poll_ms: 1000,
            saga_max_attempts: 8,
            saga_base_backoff_ms: 200,
            saga_max_backoff_ms: 30_000,
        }
    }
}

fn seconds(name: &str, value: f64) -> Result<Duration, RuntimeError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            RuntimeError::Config(format!(
                "{name} must be a positive number of seconds, got {value}"
            ))
        })
}

impl SagaConfig {
    /// The worker settings; refused when they cannot work.
    pub fn worker(&self) -> Result<WorkerConfig, RuntimeError> {
        let config = WorkerConfig {
            owner: self.saga_worker_name.clone(),
            lease: seconds("SAGA_LEASE_SECS", self.saga_lease_secs)?,
            batch: self.saga_batch,
            poll: Duration::from_millis(self.saga_poll_ms),
            step_timeout: seconds("SAGA_STEP_TIMEOUT_SECS", self.saga_step_timeout_secs)?,
            ..WorkerConfig::default()
        };
        if config.step_timeout >= config.lease {
            return Err(RuntimeError::Config(
                "SAGA_STEP_TIMEOUT_SECS must be shorter than SAGA_LEASE_SECS".into(),
            ));
        }
        if config.batch < 1 || self.saga_poll_ms == 0 {
            return Err(RuntimeError::Config(
                "SAGA_BATCH and SAGA_POLL_MS must be greater than zero".into(),
            ));
        }
        Ok(config)
    }

    /// How the order saga retries a step.
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.saga_max_attempts.max(1),
            base_backoff: Duration::from_millis(self.saga_base_backoff_ms),
            max_backoff: Duration::from_millis(self.saga_max_backoff_ms.max(1)),
        }
    }
}

impl Config {
    /// The shipment consumer's inbox retention, checked against the shipping stream.
    pub fn inbox_retention(&self, streams: &[StreamSpec]) -> Result<InboxRetention, RuntimeError> {
        let retention = InboxRetention {
            keep: seconds("INBOX_RETENTION_SECS", self.inbox_retention_secs)?,
            purge_every: Duration::from_secs(3600),
        };
        retention
            .validate(streams)
            .map_err(|e| RuntimeError::Config(format!("INBOX_RETENTION_SECS: {e}")))?;
        Ok(retention)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saga_defaults_work_and_a_step_longer_than_its_lease_does_not() {
        let defaults = SagaConfig::default();
        let worker = defaults.worker().unwrap();
        assert!(worker.step_timeout < worker.lease);
        assert_eq!(defaults.retry().max_attempts, 8);
        let bad = SagaConfig {
            saga_step_timeout_secs: 40.0,
            ..SagaConfig::default()
        };
        assert!(bad.worker().is_err());
        let zero = SagaConfig {
            saga_lease_secs: 0.0,
            ..SagaConfig::default()
        };
        assert!(zero.worker().is_err());
    }
}
