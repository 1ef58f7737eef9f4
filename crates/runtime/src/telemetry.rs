//! Tracing setup: `RUST_LOG` filter, text or JSON lines.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, TelemetryConfig};

/// Keeps telemetry alive; dropping it flushes what is buffered. Hold it for the life of `main`.
#[derive(Debug)]
#[must_use = "telemetry is flushed when the guard drops"]
pub struct TelemetryGuard(());

/// Installs the global subscriber. A second call (tests starting several services in one
/// process) keeps the first subscriber and is not an error.
pub fn init(config: &TelemetryConfig) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match config.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_target(true)).try_init(),
    };
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed; keeping it");
    }
    TelemetryGuard(())
}
