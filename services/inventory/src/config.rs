//! The inventory service's settings.

use std::time::Duration;

use shop_runtime::{DatabaseConfig, NatsConfig, RuntimeError, ServerConfig, TelemetryConfig};

/// Everything the inventory service reads at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "inventory", about = "The shop's inventory service (gRPC)")]
pub struct Config {
    /// Listeners and shutdown.
    #[command(flatten)]
    pub server: ServerConfig,
    /// The inventory database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Where events go (through the outbox).
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// Reservations and stock alerts.
    #[command(flatten)]
    pub stock: StockConfig,
}

/// How long reservations live and when stock counts as low.
#[derive(Debug, Clone, clap::Args)]
pub struct StockConfig {
    /// Seconds after which a reservation neither committed nor released is released.
    #[arg(long, env = "RESERVATION_TTL_SECS", default_value_t = 900.0)]
    pub reservation_ttl_secs: f64,
    /// How often the sweeper looks for expired reservations, in milliseconds.
    #[arg(long, env = "SWEEP_INTERVAL_MS", default_value_t = 1000)]
    pub sweep_interval_ms: u64,
    /// LowStock is published when a product's available units fall to or below this.
    #[arg(long, env = "LOW_STOCK_THRESHOLD", default_value_t = 10)]
    pub low_stock_threshold: i64,
}

impl Default for StockConfig {
    fn default() -> Self {
        Self {
            reservation_ttl_secs: 900.0,
            sweep_interval_ms: 1000,
            low_stock_threshold: 10,
        }
    }
}

impl StockConfig {
    /// Checks what clap cannot: a positive, finite TTL and interval, a threshold not negative.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        // The TTL goes to PostgreSQL as seconds; a year is far beyond any saga.
        if !(self.reservation_ttl_secs.is_finite()
            && self.reservation_ttl_secs > 0.0
            && self.reservation_ttl_secs <= 365.0 * 24.0 * 3600.0)
        {
            return Err(RuntimeError::Config(format!(
                "RESERVATION_TTL_SECS must be in (0, 31536000], got {}",
                self.reservation_ttl_secs
            )));
        }
        if self.sweep_interval_ms == 0 {
            return Err(RuntimeError::Config(
                "SWEEP_INTERVAL_MS must be greater than zero".into(),
            ));
        }
        if self.low_stock_threshold < 0 {
            return Err(RuntimeError::Config(format!(
                "LOW_STOCK_THRESHOLD must not be negative, got {}",
                self.low_stock_threshold
            )));
        }
        Ok(())
    }

    /// The sweeper's period.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_not() {
        assert!(StockConfig::default().validate().is_ok());
        for bad in [
            StockConfig {
                reservation_ttl_secs: 0.0,
                ..StockConfig::default()
            },
            StockConfig {
                reservation_ttl_secs: f64::NAN,
                ..StockConfig::default()
            },
            StockConfig {
                sweep_interval_ms: 0,
                ..StockConfig::default()
            },
            StockConfig {
                low_stock_threshold: -1,
                ..StockConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
