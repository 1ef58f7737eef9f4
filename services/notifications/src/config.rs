//! The notifications service's settings.

use std::time::Duration;

use shop_events::StreamSpec;
use shop_events::inbox::InboxRetention;
use shop_runtime::{DatabaseConfig, NatsConfig, ServerConfig, TelemetryConfig};

/// Everything the notifications service reads at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "notifications",
    about = "The shop's notifications service (gRPC)"
)]
pub struct Config {
    /// Listeners and shutdown.
    #[command(flatten)]
    pub server: ServerConfig,
    /// The notifications database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Where events come from.
    #[command(flatten)]
    pub nats: NatsConfig,
    /// How long the consumers' inboxes remember applied events.
    #[command(flatten)]
    pub inbox: InboxConfig,
    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

/// Retention of the consumers' inboxes (one per durable consumer).
#[derive(Debug, Clone, clap::Args)]
pub struct InboxConfig {
    /// Seconds an inbox entry is kept. Must be longer than the source streams' duplicate
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
    /// The retention, checked against the `streams` the consumers read.
    pub fn retention(&self, streams: &[StreamSpec]) -> Result<InboxRetention, String> {
        let secs = |name: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("{name} must be a positive number of seconds, got {value}"))
        };
        let retention = InboxRetention {
            keep: secs("INBOX_RETENTION_SECS", self.inbox_retention_secs)?,
            purge_every: secs("INBOX_PURGE_INTERVAL_SECS", self.inbox_purge_interval_secs)?,
        };
        retention
            .validate(streams)
            .map_err(|e| format!("INBOX_RETENTION_SECS: {e}"))?;
        Ok(retention)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_must_outlast_the_streams() {
        let streams = [StreamSpec::for_context("identity")];
        assert!(InboxConfig::default().retention(&streams).is_ok());
        let six_days = InboxConfig {
            inbox_retention_secs: 6.0 * 24.0 * 3600.0,
            ..InboxConfig::default()
        };
        let err = six_days.retention(&streams).err().unwrap_or_default();
        assert!(
            err.contains("INBOX_RETENTION_SECS") && err.contains("max age"),
            "{err}"
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let config = InboxConfig {
                inbox_purge_interval_secs: bad,
                ..InboxConfig::default()
            };
            assert!(config.retention(&streams).is_err(), "{bad}");
        }
    }
}
