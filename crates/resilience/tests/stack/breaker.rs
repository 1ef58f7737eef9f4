//! Every circuit breaker transition, on an in-memory dependency with paused time, plus one run
//! against a real gRPC server.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

use shop_resilience::Rejection;
use shop_resilience::breaker::{BreakerConfig, BreakerState, CircuitBreaker, CircuitBreakerLayer};
use shop_resilience::classify::grpc_code;
use tokio::sync::Semaphore;
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};

use crate::support::{self, TestServer};

/// An in-memory dependency: answers `code`, optionally waiting for a gate permit first.
#[derive(Clone, Default)]
struct Dependency {
    code: Arc<AtomicI32>,
    calls: Arc<AtomicUsize>,
    gate: Option<Arc<Semaphore>>,
}

impl Dependency {
    fn answer(&self, code: Code) {
        self.code.store(code as i32, Ordering::SeqCst);
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<http::Request<Body>> for Dependency {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let code = Code::from(self.code.load(Ordering::SeqCst));
        let gate = self.gate.clone();
        Box::pin(async move {
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            Ok(tonic::Status::new(code, "dep").into_http())
        })
    }
}

fn config() -> BreakerConfig {
    BreakerConfig {
        window: Duration::from_secs(10),
        min_calls: 10,
        failure_rate: 0.5,
        consecutive_failures: 5,
        open_timeout: Duration::from_secs(5),
        half_open_probes: 2,
        close_after: 3,
    }
}

fn breaker(dep: &Dependency, config: BreakerConfig) -> CircuitBreaker<Dependency> {
    CircuitBreakerLayer::new("dep", config).layer(dep.clone())
}

async fn call(svc: &CircuitBreaker<Dependency>) -> (Code, Option<Rejection>) {
    let response = svc
        .clone()
        .oneshot(support::request("/t.S/M"))
        .await
        .unwrap();
    (
        grpc_code(&response).unwrap_or(Code::Ok),
        Rejection::of(&response),
    )
}

async fn open(dep: &Dependency, svc: &CircuitBreaker<Dependency>) {
    dep.answer(Code::Unavailable);
    for _ in 0..5 {
        assert_eq!(call(svc).await.1, None);
    }
    assert_eq!(svc.handle().state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn opens_on_consecutive_failures_and_fails_fast_without_calling() {
    let dep = Dependency::default();
    let svc = breaker(&dep, config());
    dep.answer(Code::Unavailable);
    for _ in 0..4 {
        call(&svc).await;
    }
    assert_eq!(svc.handle().state(), BreakerState::Closed);
    call(&svc).await;
    assert_eq!(svc.handle().state(), BreakerState::Open);

    let before = dep.calls();
    for _ in 0..20 {
        assert_eq!(
            call(&svc).await,
            (Code::Unavailable, Some(Rejection::CircuitOpen))
        );
    }
    assert_eq!(
        dep.calls(),
        before,
        "open breaker must not touch the dependency"
    );
}

#[tokio::test(start_paused = true)]
async fn opens_on_failure_rate_after_min_calls() {
    let dep = Dependency::default();
    let svc = breaker(&dep, config());
    // Alternate success and failure: never 5 in a row, but a 50 % failure rate.
    for i in 0..9 {
        dep.answer(if i % 2 == 0 { Code::Internal } else { Code::Ok });
        call(&svc).await;
        assert_eq!(svc.handle().state(), BreakerState::Closed, "call {i}");
    }
    dep.answer(Code::Ok);
    call(&svc).await; // 10 calls, 5 failures: rate reached, but this one succeeded
    dep.answer(Code::ResourceExhausted);
    call(&svc).await; // 11 calls, 6 failures
    assert_eq!(svc.handle().state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn caller_errors_never_open() {
    let dep = Dependency::default();
    let svc = breaker(&dep, config());
    for code in [
        Code::NotFound,
        Code::InvalidArgument,
        Code::FailedPrecondition,
    ] {
        dep.answer(code);
        for _ in 0..20 {
            assert_eq!(call(&svc).await.0, code);
        }
    }
    assert_eq!(svc.handle().state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_only_n_probes_under_concurrency_then_closes() {
    let gate = Arc::new(Semaphore::new(0));
    let dep = Dependency {
        gate: Some(gate.clone()),
        ..Dependency::default()
    };
    let svc = breaker(&dep, config());
    gate.add_permits(5);
    open(&dep, &svc).await;

    tokio::time::advance(Duration::from_secs(5)).await;
    dep.answer(Code::Ok);
    let before = dep.calls();
    let racers: Vec<_> = (0..10)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { call(&svc).await })
        })
        .collect();
    // Let every racer reach the breaker; the probes then block on the gate.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(svc.handle().state(), BreakerState::HalfOpen);
    assert_eq!(
        dep.calls() - before,
        2,
        "exactly half_open_probes calls reach the dependency"
    );

    gate.add_permits(2);
    let mut results = Vec::new();
    for racer in racers {
        results.push(racer.await.unwrap());
    }
    let probes = results.iter().filter(|r| r.1.is_none()).count();
    let rejected = results
        .iter()
        .filter(|r| r.1 == Some(Rejection::CircuitOpen))
        .count();
    assert_eq!((probes, rejected), (2, 8));
    assert_eq!(
        svc.handle().state(),
        BreakerState::HalfOpen,
        "2 of 3 successes so far"
    );

    gate.add_permits(1);
    assert_eq!(call(&svc).await, (Code::Ok, None));
    assert_eq!(svc.handle().state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn failed_probe_reopens() {
    let dep = Dependency::default();
    let svc = breaker(&dep, config());
    open(&dep, &svc).await;

    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(
        call(&svc).await.1,
        Some(Rejection::CircuitOpen),
        "still open before timeout"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    dep.answer(Code::Ok);
    assert_eq!(call(&svc).await, (Code::Ok, None));
    assert_eq!(svc.handle().state(), BreakerState::HalfOpen);
    dep.answer(Code::DeadlineExceeded);
    assert_eq!(call(&svc).await, (Code::DeadlineExceeded, None));
    assert_eq!(svc.handle().state(), BreakerState::Open);
    // The new open period starts now.
    let before = dep.calls();
    assert_eq!(call(&svc).await.1, Some(Rejection::CircuitOpen));
    assert_eq!(dep.calls(), before);
}

#[tokio::test]
async fn opens_against_a_real_grpc_server() {
    let server = TestServer::start().await;
    server.knobs.answer(Code::Unavailable);
    let svc = CircuitBreakerLayer::new("real", config()).layer(support::channel(server.addr));
    let handle = svc.handle();
    for _ in 0..5 {
        assert_eq!(
            support::call(&svc, "/test.Status/Get").await,
            Code::Unavailable
        );
    }
    assert_eq!(handle.state(), BreakerState::Open);
    for _ in 0..10 {
        assert_eq!(
            support::call(&svc, "/test.Status/Get").await,
            Code::Unavailable
        );
    }
    assert_eq!(server.knobs.calls(), 5);
    server.stop().await;
}
