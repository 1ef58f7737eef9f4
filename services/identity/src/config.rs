//! The identity service's settings.

use shop_runtime::{DatabaseConfig, NatsConfig, ServerConfig, TelemetryConfig};

/// Everything the identity service reads at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "identity", about = "The shop's identity service (gRPC)")]
pub struct Config {
    /// Listeners and shutdown.
    #[command(flatten)]
    pub server: ServerConfig,
    /// The identity database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Where events go (through the outbox).
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// Tokens.
    #[command(flatten)]
    pub tokens: TokenConfig,
}

/// How access tokens are issued.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenConfig {
    /// `iss` of issued tokens.
    #[arg(long, env = "JWT_ISSUER", default_value = "shop-identity")]
    pub jwt_issuer: String,
    /// `aud` of issued tokens.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "shop")]
    pub jwt_audience: String,
    /// Lifetime of an access token in seconds.
    #[arg(long, env = "JWT_TTL_SECS", default_value_t = 3600)]
    pub jwt_ttl_secs: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            jwt_issuer: "shop-identity".into(),
            jwt_audience: "shop".into(),
            jwt_ttl_secs: 3600,
        }
    }
}
