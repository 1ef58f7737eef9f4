//! Resilient clients for calls to other services: one line per dependency.
//!
//! Outermost on every channel, [`ClientObserveLayer`]: one client span per call (its W3C trace
//! context goes out in the metadata, so the callee's span is its child) and the client RPC
//! metrics, once per call however many attempts it takes.
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
//!
//! What may be retried comes from the contracts, not from code: every unary RPC whose proto
//! says `option idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT` (read once from
//! `shop_proto::FILE_DESCRIPTOR_SET`), and nothing else. Streaming RPCs are never retried: a
//! retry would replay a stream, and an attempt's share of the deadline would cut it short.

use std::{collections::HashSet, net::SocketAddr, sync::LazyLock, time::Duration};

use prost_reflect::{DescriptorPool, Value};

pub use shop_resilience::{
    balance::Endpoints,
    breaker::{BreakerHandle, BreakerState},
    client::{ClientError, DependencyConfig, ResilientChannel},
    deadline::{Deadline, current as current_deadline},
};

use crate::metrics::Metrics;
use crate::observe::{ClientObserveLayer, KnownMethods};

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
    Ok(channel.wrap(ClientObserveLayer::new(
        metrics.clone(),
        CONTRACT_METHODS.clone(),
        &config.name,
    )))
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
    config.retry.idempotent_methods = CONTRACT_IDEMPOTENT.clone();
    Ok(config)
}

/// Every method of the shop's own contracts, for the client metrics' labels.
static CONTRACT_METHODS: LazyLock<KnownMethods> = LazyLock::new(|| {
    KnownMethods::all(&[shop_proto::FILE_DESCRIPTOR_SET]).unwrap_or_else(|error| {
        // Unreachable with the set shop-proto compiles; every call is then labelled unknown.
        tracing::error!(%error, "cannot read the methods of the contracts");
        KnownMethods::default()
    })
});

/// The retryable methods of the shop's own contracts.
static CONTRACT_IDEMPOTENT: LazyLock<HashSet<String>> = LazyLock::new(|| {
    idempotent_methods(shop_proto::FILE_DESCRIPTOR_SET).unwrap_or_else(|error| {
        // Unreachable with the set shop-proto compiles (a test decodes it); without it nothing
        // is retried, which is safe.
        tracing::error!(%error, "cannot read idempotency levels from the contracts");
        HashSet::new()
    })
});

/// `google.protobuf.MethodOptions.idempotency_level`'s `NO_SIDE_EFFECTS` and `IDEMPOTENT`.
const RETRYABLE_LEVELS: [i32; 2] = [1, 2];

/// The paths (`/pkg.Service/Method`) of every unary method in `descriptor_set` (an encoded
/// `FileDescriptorSet`) marked `NO_SIDE_EFFECTS` or `IDEMPOTENT`.
pub fn idempotent_methods(
    descriptor_set: &[u8],
) -> Result<HashSet<String>, prost_reflect::DescriptorError> {
    let pool = DescriptorPool::decode(descriptor_set)?;
    let methods = pool
        .services()
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .filter(|method| !method.is_client_streaming() && !method.is_server_streaming())
        .filter(|method| {
            let options = method.options();
            let level = options.get_field_by_name("idempotency_level");
            matches!(level.as_deref(), Some(Value::EnumNumber(n)) if RETRYABLE_LEVELS.contains(n))
        })
        .map(|method| format!("/{}/{}", method.parent_service().full_name(), method.name()))
        .collect();
    Ok(methods)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use shop_proto::catalog::{
        CreateProductRequest, GetProductRequest, UpdatePriceRequest,
        catalog_service_client::CatalogServiceClient,
    };

    use super::*;

    /// Answers every call UNAVAILABLE and counts them: a catalog that is down.
    #[derive(Clone, Default)]
    struct DownCatalog {
        calls: Arc<AtomicUsize>,
    }

    impl tonic::server::NamedService for DownCatalog {
        const NAME: &'static str = shop_proto::catalog::catalog_service_server::SERVICE_NAME;
    }

    impl tower::Service<http::Request<tonic::body::Body>> for DownCatalog {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(
            &mut self,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: http::Request<tonic::body::Body>) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(tonic::Status::unavailable("down").into_http()))
        }
    }

    /// What is retried follows `idempotency_level` in proto/: no path is named here.
    #[tokio::test]
    async fn the_contracts_decide_what_is_retried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let catalog = DownCatalog::default();
        let calls = catalog.calls.clone();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(catalog)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut config = dependency("catalog", "orders", &format!("http://{addr}")).unwrap();
        config.breaker.consecutive_failures = u32::MAX;
        config.breaker.min_calls = u32::MAX;
        config.retry.base_backoff = Duration::from_millis(1);
        config.retry.max_backoff = Duration::from_millis(2);
        let attempts = config.retry.max_attempts as usize;
        let channel = connect(&config, &Metrics::new()).await.unwrap();
        let mut client = CatalogServiceClient::new(channel);

        // IDEMPOTENT (by its idempotency key): every attempt is made.
        let status = client
            .create_product(CreateProductRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(calls.swap(0, Ordering::SeqCst), attempts, "CreateProduct");

        // NO_SIDE_EFFECTS: likewise.
        let status = client
            .get_product(GetProductRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(calls.swap(0, Ordering::SeqCst), attempts, "GetProduct");

        // Unmarked: sent once.
        let status = client
            .update_price(UpdatePriceRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1, "UpdatePrice");
        server.abort();
    }

    #[test]
    fn idempotency_levels_survive_into_the_descriptor_set() {
        use prost::Message as _;

        // protox keeps MethodOptions.idempotency_level (field 34) in the encoded set.
        let set = prost_types::FileDescriptorSet::decode(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
        let level = |service: &str, method: &str| {
            set.file
                .iter()
                .flat_map(|f| f.service.iter())
                .filter(|s| s.name() == service)
                .flat_map(|s| s.method.iter())
                .find(|m| m.name() == method)
                .and_then(|m| m.options.as_ref())
                .map(prost_types::MethodOptions::idempotency_level)
        };
        use prost_types::method_options::IdempotencyLevel;
        assert_eq!(
            level("CatalogService", "GetProduct"),
            Some(IdempotencyLevel::NoSideEffects)
        );
        assert_eq!(
            level("CatalogService", "CreateProduct"),
            Some(IdempotencyLevel::Idempotent)
        );

        let retried = idempotent_methods(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
        for path in [
            "/shop.catalog.v1.CatalogService/GetProduct",
            "/shop.catalog.v1.CatalogService/CreateProduct",
            "/shop.identity.v1.IdentityService/GetJwks",
            "/shop.notifications.v1.NotificationService/ListNotifications",
        ] {
            assert!(retried.contains(path), "{path} in {retried:?}");
        }
        for path in [
            "/shop.identity.v1.IdentityService/Login",
            "/shop.identity.v1.IdentityService/Register",
            "/shop.catalog.v1.CatalogService/UpdatePrice",
            // Marked NO_SIDE_EFFECTS, but a stream is never retried.
            "/shop.notifications.v1.NotificationService/WatchNotifications",
        ] {
            assert!(!retried.contains(path), "{path} in {retried:?}");
        }
    }

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
