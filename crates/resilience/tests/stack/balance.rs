//! p2c over three real servers: spreads calls, routes around a killed and a blackholed one.

use std::time::Duration;

use shop_resilience::balance::{EndpointConfig, Endpoints};
use shop_resilience::client::{self, DependencyConfig, ResilientChannel};
use shop_resilience::eject::EjectConfig;
use shop_testkit::fault_proxy::{Fault, FaultProxy};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceExt;

use crate::support::{self, TestServer};

const GET: &str = "/test.Status/Get";

async fn burst(channel: &ResilientChannel, calls: usize) -> Vec<Code> {
    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            let channel = channel.clone();
            tokio::spawn(async move { support::call(&channel, GET).await })
        })
        .collect();
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    codes
}

#[tokio::test]
async fn spreads_calls_and_routes_around_killed_and_blackholed_endpoints() {
    tokio::time::timeout(Duration::from_secs(60), spread_and_route_around())
        .await
        .expect("test timed out");
}

async fn spread_and_route_around() {
    let servers = [
        TestServer::start().await,
        TestServer::start().await,
        TestServer::start().await,
    ];
    let proxy = FaultProxy::start(servers[2].addr).await.unwrap();
    let addrs = vec![servers[0].addr, servers[1].addr, proxy.addr()];

    let mut config = DependencyConfig::new("status", Endpoints::Static(addrs));
    config.timeout = Some(Duration::from_secs(5));
    config.endpoint.attempt_timeout = Some(Duration::from_millis(300));
    config.endpoint.eject = EjectConfig {
        consecutive_failures: 2,
        ejection_time: Duration::from_secs(60),
    };
    config.retry.idempotent_methods = ["/test.Status/*".to_owned()].into();
    config.retry.budget_min_per_sec = 100;
    config.breaker.consecutive_failures = 1000;
    config.breaker.min_calls = 1000;
    let channel = client::connect(&config).await.unwrap();

    // Spread: every server gets a fair share of 300 calls.
    for _ in 0..10 {
        assert!(burst(&channel, 30).await.iter().all(|c| *c == Code::Ok));
    }
    let counts: Vec<usize> = servers.iter().map(|s| s.knobs.calls()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 300);
    assert!(counts.iter().all(|c| *c >= 50), "uneven spread: {counts:?}");

    // Kill server 1: retries cover the failures, then it is ejected.
    let [first, second, third] = servers;
    second.stop().await;
    for _ in 0..5 {
        assert!(burst(&channel, 20).await.iter().all(|c| *c == Code::Ok));
    }

    // Blackhole server 2 (behind the proxy): hung attempts time out, are retried elsewhere, and
    // the endpoint is ejected, so later calls all land on server 0.
    proxy.set(Fault::Blackhole);
    for _ in 0..5 {
        assert!(burst(&channel, 20).await.iter().all(|c| *c == Code::Ok));
    }
    let before = (first.knobs.calls(), third.knobs.calls());
    assert!(burst(&channel, 50).await.iter().all(|c| *c == Code::Ok));
    assert_eq!(
        first.knobs.calls() - before.0,
        50,
        "all calls go to the last healthy server"
    );
    assert_eq!(third.knobs.calls(), before.1);
    drop(proxy);
    first.stop().await;
    third.stop().await;
}

#[tokio::test]
async fn typed_client_in_one_line_over_tonic_health() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let config = DependencyConfig::new("health", Endpoints::Static(vec![addr]));
    let mut client = HealthClient::new(client::connect(&config).await.unwrap());
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(response.into_inner().status, 1, "SERVING");
    server.abort();
}

/// Calls made before the balancer has any endpoint (DNS still resolving) all park; once the
/// endpoints arrive every one of them is woken and dispatched, none is stranded.
#[tokio::test]
async fn callers_parked_before_resolution_are_all_dispatched() {
    let server = TestServer::start().await;
    let endpoints = Endpoints::Dns {
        host: "localhost".to_owned(),
        port: server.addr.port(),
        refresh: Duration::from_secs(60),
    };
    let balanced =
        shop_resilience::balance::balanced(endpoints, EndpointConfig::default()).unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let balanced = balanced.clone();
            tokio::spawn(async move { balanced.oneshot(support::request(GET)).await.is_ok() })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        // `localhost` may also resolve to ::1, where nothing listens: those calls fail, but
        // they must finish.
        let done = tokio::time::timeout(Duration::from_secs(10), task).await;
        ok += usize::from(done.expect("a parked caller was never woken").unwrap());
    }
    assert!(ok > 0, "no call reached the server");
    server.stop().await;
}

/// With the default config (no fixed attempt timeout), a blackholed endpoint beside a healthy
/// one is ejected, and calls succeed meanwhile: each attempt of a retryable call gets a share of
/// the deadline, so an attempt to the blackhole times out, counts against it and leaves time
/// for a retry. Only a call whose three attempts all drew the blackhole can fail, and that can
/// happen once at most before the fifth failure ejects it (an attempt that took the whole
/// deadline would fail its call every time). Once ejected, every call lands on the healthy
/// server.
#[tokio::test]
async fn a_blackholed_endpoint_is_ejected_under_the_default_config() {
    tokio::time::timeout(Duration::from_secs(60), eject_blackholed_by_default())
        .await
        .expect("test timed out");
}

async fn eject_blackholed_by_default() {
    let healthy = TestServer::start().await;
    let hidden = TestServer::start().await;
    let proxy = FaultProxy::start(hidden.addr).await.unwrap();
    let addrs = vec![healthy.addr, proxy.addr()];
    let mut config = DependencyConfig::new("status", Endpoints::Static(addrs));
    config.retry.idempotent_methods = ["/test.Status/*".to_owned()].into();
    // Only ejection is under test: a breaker opening on the timeouts would hide it.
    config.breaker.consecutive_failures = u32::MAX;
    config.breaker.min_calls = u32::MAX;
    assert_eq!(config.endpoint, EndpointConfig::default());
    let channel = client::connect(&config).await.unwrap();
    for _ in 0..10 {
        assert_eq!(support::call(&channel, GET).await, Code::Ok);
    }
    assert!(hidden.knobs.calls() > 0, "both endpoints were in use");

    proxy.set(Fault::Blackhole);
    let mut codes = Vec::new();
    while channel.ejected_endpoints() == 0 && codes.len() < 40 {
        codes.push(support::call(&channel, GET).await);
    }
    assert_eq!(channel.ejected_endpoints(), 1, "never ejected: {codes:?}");
    let failed = codes.iter().filter(|c| **c != Code::Ok).count();
    assert!(failed <= 1, "calls failed while it was ejected: {codes:?}");

    let before = healthy.knobs.calls();
    for _ in 0..20 {
        assert_eq!(support::call(&channel, GET).await, Code::Ok);
    }
    assert_eq!(
        healthy.knobs.calls() - before,
        20,
        "every call on the healthy server"
    );
    drop(proxy);
    healthy.stop().await;
    hidden.stop().await;
}
