//! Server protection over real gRPC: load shedding under 4x overload, per-caller rate limits,
//! deadline propagation into handlers.

use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shop_resilience::rate_limit::RateLimitConfig;
use shop_resilience::server::{ServerConfig, ServerLayer};
use tonic::Code;
use tower::ServiceExt;
use tower::limit::ConcurrencyLimitLayer;

use crate::support::{self, TestServer};

const LIMIT: usize = 4;
const DELAY: Duration = Duration::from_millis(100);

/// Fires `4 * LIMIT` concurrent calls, three waves; returns (code, latency) of every call.
async fn overload(server: &TestServer) -> Vec<(Code, Duration)> {
    let channel = support::channel(server.addr);
    assert_eq!(support::call(&channel, "/test.Status/Warm").await, Code::Ok);
    server.knobs.delay(DELAY);
    let mut results = Vec::new();
    for _wave in 0..3 {
        let calls: Vec<_> = (0..4 * LIMIT)
            .map(|_| {
                let channel = channel.clone();
                tokio::spawn(async move {
                    let start = Instant::now();
                    let code = support::call(&channel, "/test.Status/Get").await;
                    (code, start.elapsed())
                })
            })
            .collect();
        for call in calls {
            results.push(call.await.unwrap());
        }
    }
    results
}

fn max_latency(results: &[(Code, Duration)]) -> Duration {
    results
        .iter()
        .filter(|(code, _)| *code == Code::Ok)
        .map(|(_, latency)| *latency)
        .max()
        .unwrap()
}

#[tokio::test]
async fn sheds_load_at_4x_with_bounded_latency_for_accepted_calls() {
    let config = ServerConfig {
        max_concurrent: LIMIT,
        rate_limit: None,
    };
    let shedding = TestServer::start_with(ServerLayer::new(&config)).await;
    let shed_results = overload(&shedding).await;

    let ok = shed_results.iter().filter(|r| r.0 == Code::Ok).count();
    let shed = shed_results
        .iter()
        .filter(|r| r.0 == Code::ResourceExhausted)
        .count();
    assert_eq!(
        ok + shed,
        shed_results.len(),
        "only OK or RESOURCE_EXHAUSTED"
    );
    assert!(ok >= LIMIT, "accepted calls per run: {ok}");
    assert!(
        shed >= shed_results.len() / 2,
        "most of a 4x overload is shed: {shed}"
    );
    assert!(shedding.knobs.max_in_flight.load(Ordering::SeqCst) <= LIMIT);

    // Baseline in the same run: the same limit without shedding queues every call.
    let queueing = TestServer::start_with(ConcurrencyLimitLayer::new(LIMIT)).await;
    let queued_results = overload(&queueing).await;
    assert!(queued_results.iter().all(|r| r.0 == Code::Ok));

    let (accepted, queued) = (max_latency(&shed_results), max_latency(&queued_results));
    assert!(
        accepted * 2 < queued,
        "accepted calls stay near one service time ({accepted:?}) while queueing grows to \
         four ({queued:?})"
    );
    shedding.stop().await;
    queueing.stop().await;
}

#[tokio::test]
async fn rate_limits_each_caller_separately() {
    // Behind a trusted proxy that names callers in a header (the mTLS identity is the default
    // key; services' own tests show that one).
    let config = ServerConfig {
        max_concurrent: 64,
        rate_limit: Some(RateLimitConfig {
            per_second: NonZeroU32::MIN,
            burst: NonZeroU32::new(3).unwrap(),
            caller_header: Some(http::HeaderName::from_static("x-caller-id")),
        }),
    };
    let server = TestServer::start_with(ServerLayer::new(&config)).await;
    let channel = support::channel(server.addr);
    let call_as = |caller: &'static str| {
        let channel = channel.clone();
        async move {
            let mut req = support::request("/test.Status/Get");
            req.headers_mut()
                .insert("x-caller-id", caller.parse().unwrap());
            let response = channel.oneshot(req).await.unwrap();
            shop_resilience::classify::grpc_code(&response).unwrap_or(Code::Ok)
        }
    };
    let mut noisy = Vec::new();
    for _ in 0..6 {
        noisy.push(call_as("noisy").await);
    }
    let ok = noisy.iter().filter(|c| **c == Code::Ok).count();
    assert!(
        (3..=4).contains(&ok),
        "burst of 3 (+1 refill at most): {noisy:?}"
    );
    assert!(noisy.contains(&Code::ResourceExhausted));
    assert_eq!(
        call_as("quiet").await,
        Code::Ok,
        "other callers are unaffected"
    );
    server.stop().await;
}

#[tokio::test]
async fn handlers_see_the_incoming_deadline() {
    let server = TestServer::start_with(ServerLayer::new(&ServerConfig::default())).await;
    let channel = support::channel(server.addr);
    let mut req = support::request("/test.Status/Get");
    req.headers_mut()
        .insert("grpc-timeout", "500m".parse().unwrap());
    channel.clone().oneshot(req).await.unwrap();
    assert_eq!(support::call(&channel, "/test.Status/Get").await, Code::Ok);
    assert_eq!(
        *server.knobs.saw_deadline.lock().unwrap(),
        vec![true, false]
    );
    server.stop().await;
}

/// A caller over its quota gets RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo details, and
/// its breaker stays closed: the dependency is healthy, the caller is too fast. A plain
/// RESOURCE_EXHAUSTED (a server out of capacity) still opens it.
#[tokio::test]
async fn our_own_rate_limit_does_not_open_the_callers_breaker() {
    use shop_resilience::balance::Endpoints;
    use shop_resilience::breaker::BreakerState;
    use shop_resilience::client::{self, DependencyConfig};
    use tonic_types::StatusExt as _;

    let config = ServerConfig {
        max_concurrent: 64,
        rate_limit: Some(RateLimitConfig {
            per_second: NonZeroU32::MIN,
            burst: NonZeroU32::MIN,
            ..RateLimitConfig::default()
        }),
    };
    let limited = TestServer::start_with(ServerLayer::new(&config)).await;
    let dependency = DependencyConfig::new("status", Endpoints::Static(vec![limited.addr]));
    let channel = client::connect(&dependency).await.unwrap();
    let mut throttled = 0;
    for _ in 0..20 {
        let response = channel
            .clone()
            .oneshot(support::request("/test.Status/Get"))
            .await
            .unwrap();
        let Some(status) = tonic::Status::from_header_map(response.headers()) else {
            continue; // OK: no status in the headers
        };
        if status.code() == Code::Ok {
            continue;
        }
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let retry = status.get_details_retry_info().expect("RetryInfo detail");
        assert!(
            retry
                .retry_delay
                .is_some_and(|d| d <= Duration::from_secs(1))
        );
        assert!(status.get_details_quota_failure().is_some(), "QuotaFailure");
        throttled += 1;
    }
    assert!(throttled >= 15, "the quota of 1/s throttles: {throttled}");
    assert_eq!(channel.breaker().state(), BreakerState::Closed);

    let exhausted = TestServer::start().await;
    exhausted.knobs.answer(Code::ResourceExhausted);
    let dependency = DependencyConfig::new("status", Endpoints::Static(vec![exhausted.addr]));
    let channel = client::connect(&dependency).await.unwrap();
    for _ in 0..10 {
        support::call(&channel, "/test.Status/Get").await;
    }
    assert_eq!(channel.breaker().state(), BreakerState::Open);
    limited.stop().await;
    exhausted.stop().await;
}
