//! The shipping service's settings.

use std::time::Duration;

use shop_events::{StreamSpec, inbox::InboxRetention};
use shop_runtime::{DatabaseConfig, NatsConfig, RuntimeError, ServerConfig, TelemetryConfig};

/// Everything the shipping service reads at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "shipping", about = "The shop's shipping service (gRPC)")]
pub struct Config {
    /// Listeners and shutdown.
    #[command(flatten)]
    pub server: ServerConfig,
    /// The shipping database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Where order events come from and shipment events go (through the outbox).
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// The simulated carrier.
    #[command(flatten)]
    pub delivery: DeliveryConfig,
    /// How long the consumer's inbox remembers applied events.
    #[command(flatten)]
    pub inbox: InboxConfig,
}

/// Longest delay accepted for either leg of the simulated delivery: 30 days.
const MAX_DELAY_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// The simulated carrier: how long after scheduling a parcel is picked up, how long it travels,
/// and how often the sweeper looks for shipments whose next step is due.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliveryConfig {
    /// Seconds from scheduling to pickup (SCHEDULED -> IN_TRANSIT); cancellable until then.
    #[arg(long, env = "SHIPPING_PICKUP_DELAY_SECS", default_value_t = 2.0)]
    pub pickup_delay_secs: f64,
    /// Seconds from pickup to delivery (IN_TRANSIT -> DELIVERED, ShipmentDelivered published).
    #[arg(long, env = "SHIPPING_DELIVERY_DELAY_SECS", default_value_t = 5.0)]
    pub delivery_delay_secs: f64,
    /// How often the sweeper looks for due shipments, in milliseconds.
    #[arg(long, env = "SWEEP_INTERVAL_MS", default_value_t = 500)]
    pub sweep_interval_ms: u64,
    /// Handlers of order events running at once (per replica).
    #[arg(long, env = "CONSUMER_CONCURRENCY", default_value_t = 8)]
    pub consumer_concurrency: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            pickup_delay_secs: 2.0,
            delivery_delay_secs: 5.0,
            sweep_interval_ms: 500,
            consumer_concurrency: 8,
        }
    }
}

impl DeliveryConfig {
    /// Checks what clap cannot: delays finite and within 0..=30 days, interval and concurrency
    /// above zero.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        for (name, value) in [
            ("SHIPPING_PICKUP_DELAY_SECS", self.pickup_delay_secs),
            ("SHIPPING_DELIVERY_DELAY_SECS", self.delivery_delay_secs),
        ] {
            if !(value.is_finite() && (0.0..=MAX_DELAY_SECS).contains(&value)) {
                return Err(RuntimeError::Config(format!(
                    "{name} must be in [0, {MAX_DELAY_SECS}], got {value}"
                )));
            }
        }
        if self.sweep_interval_ms == 0 {
            return Err(RuntimeError::Config(
                "SWEEP_INTERVAL_MS must be greater than zero".into(),
            ));
        }
        if self.consumer_concurrency == 0 {
            return Err(RuntimeError::Config(
                "CONSUMER_CONCURRENCY must be greater than zero".into(),
            ));
        }
        Ok(())
    }

    /// The sweeper's period.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }
}

/// Retention of the consumer's inbox.
#[derive(Debug, Clone, clap::Args)]
pub struct InboxConfig {
    /// Seconds an inbox entry is kept. Must be longer than the source stream's duplicate
    /// window and max age (7 days), or an old redelivery could apply twice.
    #[arg(long, env = "INBOX_RETENTION_SECS", default_value_t = 8.0 * 24.0 * 3600.0)]
    pub inbox_retention_secs: f64,
    /// Seconds between purges of older inbox entries.
    #[arg(long, env = "INBOX_PURGE_INTERVAL_SECS", default_value_t = 3600.0)]
    pub inbox_purge_interval_secs: f64,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            inbox_retention_secs: 8.0 * 24.0 * 3600.0,
            inbox_purge_interval_secs: 3600.0,
        }
    }
}

impl InboxConfig {
    /// The retention, checked against the `streams` the consumer reads.
    pub fn retention(&self, streams: &[StreamSpec]) -> Result<InboxRetention, RuntimeError> {
        let secs = |name: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    RuntimeError::Config(format!(
                        "{name} must be a positive number of seconds, got {value}"
                    ))
                })
        };
        let retention = InboxRetention {
            keep: secs("INBOX_RETENTION_SECS", self.inbox_retention_secs)?,
            purge_every: secs("INBOX_PURGE_INTERVAL_SECS", self.inbox_purge_interval_secs)?,
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
    fn defaults_are_valid_and_nonsense_is_not() {
        assert!(DeliveryConfig::default().validate().is_ok());
        let zero_delays = DeliveryConfig {
            pickup_delay_secs: 0.0,
            delivery_delay_secs: 0.0,
            ..DeliveryConfig::default()
        };
        assert!(
            zero_delays.validate().is_ok(),
            "no delay is a valid carrier"
        );
        for bad in [
            DeliveryConfig {
                pickup_delay_secs: -1.0,
                ..DeliveryConfig::default()
            },
            DeliveryConfig {
                delivery_delay_secs: f64::NAN,
                ..DeliveryConfig::default()
            },
            DeliveryConfig {
                delivery_delay_secs: MAX_DELAY_SECS + 1.0,
                ..DeliveryConfig::default()
            },
            DeliveryConfig {
                sweep_interval_ms: 0,
                ..DeliveryConfig::default()
            },
            DeliveryConfig {
                consumer_concurrency: 0,
                ..DeliveryConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inbox_retention_must_outlast_the_orders_stream() {
        let streams = [StreamSpec::for_context("orders")];
        assert!(InboxConfig::default().retention(&streams).is_ok());
        let one_day = InboxConfig {
            inbox_retention_secs: 24.0 * 3600.0,
            ..InboxConfig::default()
        };
        let err = one_day.retention(&streams).unwrap_err().to_string();
        assert!(err.contains("INBOX_RETENTION_SECS"), "{err}");
        let never = InboxConfig {
            inbox_purge_interval_secs: 0.0,
            ..InboxConfig::default()
        };
        assert!(never.retention(&streams).is_err());
    }
}
