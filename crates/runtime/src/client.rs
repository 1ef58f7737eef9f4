//! Resilient clients for calls to other services: one line per dependency.
//!
//! ```ignore
//! let dependency = shop_runtime::client::dependency("catalog", "orders", &cfg.catalog_url)?;
//! let catalog = CatalogServiceClient::new(
//!     shop_runtime::client::connect(&dependency, server.metrics()).await?,
//! );
//! ```
//!
//! The channel carries `shop_resilience`'s client stack, outermost first: caller id →
//! deadline (the smaller of the dependency's timeout and what is left of the incoming call's
//! deadline, enforced over every attempt) → retry (idempotent methods only, full-jitter
//! backoff, retry budget) → bulkhead → circuit breaker → p2c load balancing over every
//! endpoint with ejection of failing ones. Why each sits where it does is documented in
//! `crates/resilience/README.md`. The dependency's circuit breaker shows in the service's
//! `/metrics` as `shop_client_breaker_state{dependency, state}`, and in `meshctl status`.

use std::{net::SocketAddr, time::Duration};

pub use shop_resilience::{
    balance::Endpoints,
    breaker::{BreakerHandle, BreakerState},
    client::{ClientError, DependencyConfig, ResilientChannel},
    deadline::{Deadline, current as current_deadline},
};

use crate::metrics::Metrics;

/// How often DNS names are re-resolved, so new pods behind a headless Service get traffic.
pub const DNS_REFRESH: Duration = Duration::from_secs(10);

/// Connects to the dependency `config` describes (connections are made lazily; this returns at
/// once) and reports its circuit breaker in `metrics`.
pub async fn connect(
    config: &DependencyConfig,
    metrics: &Metrics,
) -> Result<ResilientChannel, ClientError> {
    let channel = shop_resilience::client::connect(config).await?;
    metrics.track_breaker(channel.breaker().clone());
    Ok(channel)
}

/// A target that is not `http://host:port`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("dependency {name}: {target:?} is not of the form http://host:port")]
pub struct BadTarget {
    /// The dependency.
    pub name: String,
    /// What was given.
    pub target: String,
}

/// Defaults for calling `name` from `caller` at `target` (`http://host:port`): an IP address
/// is one static endpoint; a host name is resolved every [`DNS_REFRESH`] and every address it
/// returns is an endpoint (a Kubernetes headless Service returns every pod).
pub fn dependency(name: &str, caller: &str, target: &str) -> Result<DependencyConfig, BadTarget> {
    let bad = || BadTarget {
        name: name.to_owned(),
        target: target.to_owned(),
    };
    let authority = target
        .strip_prefix("http://")
        .ok_or_else(bad)?
        .trim_end_matches('/');
    let endpoints = if let Ok(addr) = authority.parse::<SocketAddr>() {
        Endpoints::Static(vec![addr])
    } else {
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Endpoints::Dns {
            host: host.to_owned(),
            port,
            refresh: DNS_REFRESH,
        }
    };
    let mut config = DependencyConfig::new(name, endpoints);
    config.caller = Some(caller.to_owned());
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn breaker_state_shows_in_metrics() {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

        // A port nothing listens on: every call fails in transport.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut config =
            dependency("ledger", "orders", &format!("http://127.0.0.1:{port}")).unwrap();
        config.breaker.consecutive_failures = 2;
        let metrics = Metrics::new();
        let channel = connect(&config, &metrics).await.unwrap();
        let line = |state: &str, value: u8| {
            format!("shop_client_breaker_state{{dependency=\"ledger\",state=\"{state}\"}} {value}")
        };
        let text = metrics.render().unwrap();
        assert!(text.contains(&line("closed", 1)), "{text}");
        assert!(text.contains(&line("open", 0)), "{text}");

        let mut client = HealthClient::new(channel);
        for _ in 0..3 {
            let status = client
                .check(HealthCheckRequest::default())
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        }
        let text = metrics.render().unwrap();
        assert!(text.contains(&line("open", 1)), "{text}");
        assert!(text.contains(&line("closed", 0)), "{text}");
        assert!(text.contains(&line("half_open", 0)), "{text}");
    }

    #[test]
    fn ip_targets_are_static_and_names_use_dns() {
        let cfg = dependency("catalog", "orders", "http://127.0.0.1:50052").unwrap();
        assert_eq!(
            cfg.endpoints,
            Endpoints::Static(vec!["127.0.0.1:50052".parse().unwrap()])
        );
        assert_eq!(cfg.caller.as_deref(), Some("orders"));
        let cfg = dependency("catalog", "orders", "http://catalog-headless:50051/").unwrap();
        assert_eq!(
            cfg.endpoints,
            Endpoints::Dns {
                host: "catalog-headless".into(),
                port: 50051,
                refresh: DNS_REFRESH
            }
        );
        for bad in [
            "catalog:50051",
            "http://catalog",
            "http://:1",
            "http://x:notaport",
        ] {
            assert!(dependency("catalog", "orders", bad).is_err(), "{bad}");
        }
    }
}
