//! The simulated processor's settings: its listeners and how it behaves at start.

use std::collections::BTreeMap;
use std::time::Duration;

use shop_runtime::{RuntimeError, ServerConfig, TelemetryConfig};

/// Everything the processor reads at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "payment-processor",
    about = "A simulated card processor (gRPC) for the shop's payments service"
)]
pub struct Config {
    /// Listeners and shutdown.
    #[command(flatten)]
    pub server: ServerConfig,
    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// Behaviour at start (changed later through `ProcessorAdminService`).
    #[command(flatten)]
    pub behavior: BehaviorConfig,
}

/// How the simulation treats calls until an admin call changes it.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct BehaviorConfig {
    /// Milliseconds added to every call after its effect, before the answer.
    #[arg(long, env = "PROCESSOR_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of calls (0..1) answered UNAVAILABLE without effect.
    #[arg(long, env = "PROCESSOR_FAILURE_RATE", default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Answer every call UNAVAILABLE.
    #[arg(long, env = "PROCESSOR_HARD_DOWN", default_value_t = false, action = clap::ArgAction::Set)]
    pub hard_down: bool,
    /// Declined card tokens as `token=reason,...`.
    #[arg(
        long,
        env = "PROCESSOR_DECLINE_TOKENS",
        default_value = "tok_decline=card_declined,tok_insufficient=insufficient_funds"
    )]
    pub decline_tokens: String,
}

impl Default for BehaviorConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            failure_rate: 0.0,
            hard_down: false,
            decline_tokens: "tok_decline=card_declined,tok_insufficient=insufficient_funds".into(),
        }
    }
}

/// The behaviour the simulation applies, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// Delay after the effect, before the answer.
    pub latency: Duration,
    /// Share of calls failed without effect.
    pub failure_rate: f64,
    /// Every call fails.
    pub hard_down: bool,
    /// Declined tokens and their reasons.
    pub decline_tokens: BTreeMap<String, String>,
}

impl BehaviorConfig {
    /// The behaviour these settings describe, or why they make none.
    pub fn behavior(&self) -> Result<Behavior, RuntimeError> {
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(RuntimeError::Config(
                "PROCESSOR_FAILURE_RATE must be within 0..=1".into(),
            ));
        }
        let mut decline_tokens = BTreeMap::new();
        for pair in self
            .decline_tokens
            .split(',')
            .filter(|p| !p.trim().is_empty())
        {
            let (token, reason) = pair.split_once('=').ok_or_else(|| {
                RuntimeError::Config(format!(
                    "PROCESSOR_DECLINE_TOKENS: {pair:?} is not token=reason"
                ))
            })?;
            decline_tokens.insert(token.trim().to_owned(), reason.trim().to_owned());
        }
        Ok(Behavior {
            latency: Duration::from_millis(self.latency_ms),
            failure_rate: self.failure_rate,
            hard_down: self.hard_down,
            decline_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_declines_the_two_test_tokens() -> Result<(), RuntimeError> {
        let behavior = BehaviorConfig::default().behavior()?;
        assert_eq!(
            behavior
                .decline_tokens
                .get("tok_insufficient")
                .map(String::as_str),
            Some("insufficient_funds")
        );
        assert_eq!(behavior.decline_tokens.len(), 2);
        Ok(())
    }

    #[test]
    fn bad_settings_are_refused() {
        let rate = BehaviorConfig {
            failure_rate: 1.5,
            ..BehaviorConfig::default()
        };
        assert!(rate.behavior().is_err());
        let tokens = BehaviorConfig {
            decline_tokens: "tok_x".into(),
            ..BehaviorConfig::default()
        };
        assert!(tokens.behavior().is_err());
    }
}
