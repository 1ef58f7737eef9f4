//! The notifications service's settings.

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
    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}
