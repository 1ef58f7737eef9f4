//! The catalog service's settings.

use shop_runtime::{DatabaseConfig, NatsConfig, ServerConfig, TelemetryConfig};

/// Everything the catalog service reads at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "catalog", about = "The shop's catalog service (gRPC)")]
pub struct Config {
    /// Listeners and shutdown.
    #[command(flatten)]
    pub server: ServerConfig,
    /// The catalog's own database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Where events go (through the outbox).
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}
