//! Retries against a real gRPC server: bounded by the budget, idempotent methods only, never past
//! the deadline.

use std::time::Duration;

use shop_resilience::balance::Endpoints;
use shop_resilience::client::{DependencyConfig, ResilientChannel};
use shop_resilience::deadline::{self, Deadline};
use shop_resilience::retry::RetryConfig;
use tonic::Code;

use crate::support::{self, TestServer};

const GET: &str = "/test.Status/Get";
const CREATE: &str = "/test.Status/Create";

/// A stack with retries on `test.Status/Get` only and a breaker that never opens.
fn config(server: &TestServer, retry: RetryConfig) -> DependencyConfig {
    let mut config = DependencyConfig::new("status", Endpoints::Static(vec![server.addr]));
    config.retry = RetryConfig {
        idempotent_methods: [GET.to_owned()].into(),
        ..retry
    };
    config.breaker.consecutive_failures = u32::MAX;
    config.breaker.min_calls = u32::MAX;
    config
}

fn fast_retries() -> RetryConfig {
    RetryConfig {
        max_attempts: 5,
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        ..RetryConfig::default()
    }
}

#[tokio::test]
async fn transient_failures_are_retried_to_success() {
    let server = TestServer::start().await;
    server.knobs.fail_first(2);
    let channel = ResilientChannel::new(
        &config(&server, fast_retries()),
        support::channel(server.addr),
    );
    assert_eq!(support::call(&channel, GET).await, Code::Ok);
    assert_eq!(server.knobs.calls(), 3);
}

#[tokio::test]
async fn sustained_outage_retries_stay_within_budget() {
    let server = TestServer::start().await;
    server.knobs.answer(Code::Unavailable);
    let retry = RetryConfig {
        budget_ttl: Duration::from_secs(10),
        budget_min_per_sec: 1,
        budget_percent: 0.2,
        ..fast_retries()
    };
    let channel = ResilientChannel::new(&config(&server, retry), support::channel(server.addr));
    let calls = 100;
    for _ in 0..calls {
        assert_eq!(support::call(&channel, GET).await, Code::Unavailable);
    }
    // Reserve: 1/s over a 10 s ttl = 10 retries; plus 20 % of 100 calls = 20 retries.
    // Without a budget, 4 retries per call would make 500 calls.
    let received = server.knobs.calls();
    assert!(received > calls, "some retries happen: {received}");
    assert!(
        received <= calls + 10 + 20 + 1,
        "retries exceed the budget: {received}"
    );
}

#[tokio::test]
async fn non_idempotent_calls_are_never_retried() {
    let server = TestServer::start().await;
    server.knobs.answer(Code::Unavailable);
    let channel = ResilientChannel::new(
        &config(&server, fast_retries()),
        support::channel(server.addr),
    );
    for _ in 0..20 {
        assert_eq!(support::call(&channel, CREATE).await, Code::Unavailable);
    }
    assert_eq!(server.knobs.calls(), 20);
}

#[tokio::test]
async fn non_retryable_codes_are_not_retried() {
    let server = TestServer::start().await;
    server.knobs.answer(Code::InvalidArgument);
    let channel = ResilientChannel::new(
        &config(&server, fast_retries()),
        support::channel(server.addr),
    );
    assert_eq!(support::call(&channel, GET).await, Code::InvalidArgument);
    assert_eq!(server.knobs.calls(), 1);
}

#[tokio::test]
async fn exhausted_deadline_sends_nothing() {
    let server = TestServer::start().await;
    let channel = ResilientChannel::new(
        &config(&server, fast_retries()),
        support::channel(server.addr),
    );
    let spent = Deadline::at(tokio::time::Instant::now());
    let code = deadline::scope(Some(spent), support::call(&channel, GET)).await;
    assert_eq!(code, Code::DeadlineExceeded);
    assert_eq!(server.knobs.calls(), 0);
}

#[tokio::test]
async fn retries_stop_at_the_deadline_and_carry_the_time_left() {
    let server = TestServer::start().await;
    server.knobs.answer(Code::Unavailable);
    server.knobs.delay(Duration::from_millis(50));
    let retry = RetryConfig {
        max_attempts: 100,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        budget_min_per_sec: 1000,
        ..RetryConfig::default()
    };
    let mut config = config(&server, retry);
    let timeout = Duration::from_millis(400);
    config.timeout = Some(timeout);
    let channel = ResilientChannel::new(&config, support::channel(server.addr));

    let code = support::call(&channel, GET).await;
    assert!(
        matches!(code, Code::Unavailable | Code::DeadlineExceeded),
        "{code:?}"
    );
    // Each attempt takes at least 50 ms, so no more than 400 / 50 fit in the deadline.
    let received = server.knobs.calls();
    assert!((1..=8).contains(&received), "attempts: {received}");
    let timeouts: Vec<Duration> = server
        .knobs
        .timeouts
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.expect("every attempt carries grpc-timeout"))
        .collect();
    assert!(timeouts.iter().all(|t| *t <= timeout), "{timeouts:?}");
    assert!(
        timeouts.windows(2).all(|w| w[1] < w[0]),
        "time left shrinks: {timeouts:?}"
    );
}
