//! The bulkhead admits `max_concurrent`, queues `max_queue` for at most `queue_timeout`, and
//! rejects the rest with RESOURCE_EXHAUSTED.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shop_resilience::Rejection;
use shop_resilience::bulkhead::{BulkheadConfig, BulkheadLayer};
use shop_resilience::classify::grpc_code;
use tokio::sync::Semaphore;
use tonic::Code;
use tower::{Layer, ServiceExt};

use crate::support;

#[tokio::test(start_paused = true)]
async fn rejects_beyond_limit_and_times_out_the_queue() {
    let gate = Arc::new(Semaphore::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let dependency = {
        let (gate, calls) = (gate.clone(), calls.clone());
        tower::service_fn(move |_req: http::Request<tonic::body::Body>| {
            let (gate, calls) = (gate.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                Ok::<_, std::convert::Infallible>(
                    tonic::Status::ok("").into_http::<tonic::body::Body>(),
                )
            }
        })
    };
    let config = BulkheadConfig {
        max_concurrent: 2,
        max_queue: 1,
        queue_timeout: Duration::from_millis(100),
    };
    let svc = BulkheadLayer::new(config).layer(dependency);

    let calls_in: Vec<_> = (0..5)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let response = svc.oneshot(support::request("/t.S/M")).await.unwrap();
                (grpc_code(&response), Rejection::of(&response))
            })
        })
        .collect();
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "only max_concurrent calls run"
    );

    // The queued call gives up after the queue timeout; the two in flight then finish.
    tokio::time::sleep(Duration::from_millis(150)).await;
    gate.add_permits(2);
    let mut outcomes = Vec::new();
    for call in calls_in {
        outcomes.push(call.await.unwrap());
    }
    let count = |rejection| outcomes.iter().filter(|o| o.1 == rejection).count();
    assert_eq!(count(None), 2);
    assert_eq!(count(Some(Rejection::BulkheadFull)), 2);
    assert_eq!(count(Some(Rejection::QueueTimeout)), 1);
    assert!(
        outcomes
            .iter()
            .filter(|o| o.1.is_some())
            .all(|o| o.0 == Some(Code::ResourceExhausted))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn queued_call_runs_when_a_slot_frees() {
    let gate = Arc::new(Semaphore::new(0));
    let dependency = {
        let gate = gate.clone();
        tower::service_fn(move |_req: http::Request<tonic::body::Body>| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, std::convert::Infallible>(
                    tonic::Status::ok("").into_http::<tonic::body::Body>(),
                )
            }
        })
    };
    let config = BulkheadConfig {
        max_concurrent: 1,
        max_queue: 1,
        queue_timeout: Duration::from_secs(1),
    };
    let svc = BulkheadLayer::new(config).layer(dependency);
    let first = tokio::spawn(svc.clone().oneshot(support::request("/t.S/M")));
    let second = tokio::spawn(svc.clone().oneshot(support::request("/t.S/M")));
    tokio::time::sleep(Duration::from_millis(10)).await;
    gate.add_permits(2);
    for call in [first, second] {
        let response = call.await.unwrap().unwrap();
        assert_eq!(Rejection::of(&response), None);
    }
}
