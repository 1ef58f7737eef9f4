//! The payments service's settings.

use std::time::Duration;

use shop_runtime::{DatabaseConfig, NatsConfig, ServerConfig, TelemetryConfig};

/// Everything the payments service reads at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "payments", about = "The shop's payments service (gRPC)")]
pub struct Config {
    /// Listeners and shutdown.
    #[command(flatten)]
    pub server: ServerConfig,
    /// The payments database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Where events go (through the outbox).
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// The external processor.
    #[command(flatten)]
    pub processor: ProcessorConfig,
}

/// How the processor is called.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessorConfig {
    /// The processor's gRPC address, `http://host:port`.
    #[arg(long, env = "PROCESSOR_URL", default_value = "http://127.0.0.1:50059")]
    pub processor_url: String,
    /// Deadline of one processor call, retries included, in milliseconds.
    #[arg(long, env = "PROCESSOR_TIMEOUT_MS", default_value_t = 3000)]
    pub processor_timeout_ms: u64,
    /// Deadline of one attempt, in milliseconds.
    #[arg(long, env = "PROCESSOR_ATTEMPT_TIMEOUT_MS", default_value_t = 1000)]
    pub processor_attempt_timeout_ms: u64,
    /// Attempts per call, the first included.
    #[arg(long, env = "PROCESSOR_MAX_ATTEMPTS", default_value_t = 4)]
    pub processor_max_attempts: u32,
    /// Consecutive failures that open the breaker.
    #[arg(long, env = "PROCESSOR_BREAKER_FAILURES", default_value_t = 5)]
    pub processor_breaker_failures: u32,
    /// How long the open breaker fails calls fast before probing, in milliseconds.
    #[arg(long, env = "PROCESSOR_BREAKER_OPEN_MS", default_value_t = 5000)]
    pub processor_breaker_open_ms: u64,
}

impl ProcessorConfig {
    /// Defaults for a processor at `url`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            processor_url: url.into(),
            processor_timeout_ms: 3000,
            processor_attempt_timeout_ms: 1000,
            processor_max_attempts: 4,
            processor_breaker_failures: 5,
            processor_breaker_open_ms: 5000,
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.processor_timeout_ms)
    }

    pub(crate) fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.processor_attempt_timeout_ms)
    }

    pub(crate) fn breaker_open(&self) -> Duration {
        Duration::from_millis(self.processor_breaker_open_ms)
    }
}
