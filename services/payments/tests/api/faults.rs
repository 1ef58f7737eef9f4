//! The processor turned bad: transient failures, hard-down, lost answers. The books stay
//! right through all of it (checked at the end of every test).

use std::future::Future;
use std::time::Duration;

use shop_proto::payments::{Payment, PaymentStatus};
use shop_proto::processor::OperationKind;
use tonic::Code;

use crate::helpers::{authorize_request, behavior, capture_request, eur, spawn_with};

/// Retries `call` with the same request while it is UNAVAILABLE, as the order saga does.
async fn until_ok<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    for _ in 0..200 {
        match call().await {
            Ok(answer) => return answer,
            Err(err) if err.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(err) => panic!("not retryable: {err:?}"),
        }
    }
    panic!("still unavailable after 200 tries");
}

#[tokio::test]
async fn with_30_percent_transient_failures_every_call_lands_exactly_once() {
    let mut app = spawn_with(|_| {}).await;
    app.set_behavior(behavior(Duration::ZERO, 0.3, false)).await;
    let mut payments = Vec::new();
    for i in 0..15 {
        let request = authorize_request(&format!("t{i}:authorize"), eur(10, 0), "tok_visa");
        let payment: Payment = until_ok(|| {
            let mut client = app.client.clone();
            let request = request.clone();
            async move { client.authorize(request).await }
        })
        .await
        .into_inner()
        .payment
        .unwrap();
        let capture = capture_request(&format!("t{i}:capture"), &payment, eur(7, 0));
        let captured = until_ok(|| {
            let mut client = app.client.clone();
            let capture = capture.clone();
            async move { client.capture(capture).await }
        })
        .await
        .into_inner()
        .payment
        .unwrap();
        assert_eq!(captured.status, PaymentStatus::Captured as i32);
        payments.push(captured);
    }
    // Failures did happen (30 operations would otherwise be 30 requests).
    assert!(app.processor_requests().await > 30);
    let operations = app.processor_operations().await;
    assert_eq!(operations.len(), 30, "one effect per key");
    app.finish().await;
}

#[tokio::test]
async fn a_hard_down_processor_opens_the_breaker_and_calls_fail_fast() {
    // The breaker stays open for the whole test once it opens.
    let mut app = spawn_with(|p| p.processor_breaker_open_ms = 600_000).await;
    let payment = app.authorize("h:authorize", eur(10, 0)).await;
    app.set_behavior(behavior(Duration::ZERO, 0.0, true)).await;
    assert!(app.breaker_is("closed").await);
    for i in 0..3 {
        let request = authorize_request(&format!("h{i}"), eur(1, 0), "tok_visa");
        let err = app.client.authorize(request).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    assert!(app.breaker_is("open").await);
    // Open: calls are answered UNAVAILABLE without reaching the processor.
    let reached = app.processor_requests().await;
    // One capture, retried with its key as the saga would.
    for _ in 0..5 {
        let err = app
            .client
            .capture(capture_request("h:capture", &payment, eur(1, 0)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    assert_eq!(app.processor_requests().await, reached);
    app.finish().await;
}

#[tokio::test]
async fn a_capture_whose_answer_is_lost_is_reconciled_not_repeated() {
    let mut app = spawn_with(|_| {}).await;
    let payment = app.authorize("l:authorize", eur(10, 0)).await;
    // The processor captures, then answers after the attempt timeout (300 ms) and the call's
    // deadline (1.5 s): the money moved but payments never hears so.
    app.set_behavior(behavior(Duration::from_millis(2000), 0.0, false))
        .await;
    let capture = capture_request("l:capture", &payment, eur(10, 0));
    let err = app.client.capture(capture.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let applied = app
        .processor_operations()
        .await
        .into_iter()
        .find(|op| op.idempotency_key == "l:capture")
        .expect("the processor applied the capture");
    assert_eq!(applied.kind, OperationKind::Capture as i32);

    // The processor recovers; the saga retries with the same key. Payments asks the processor
    // what the key did before sending anything, and records the capture it finds. (The timeouts
    // may have opened the breaker for a moment: the retry loop waits that out.)
    app.set_behavior(behavior(Duration::ZERO, 0.0, false)).await;
    let captured = until_ok(|| {
        let mut client = app.client.clone();
        let capture = capture.clone();
        async move { client.capture(capture).await }
    })
    .await
    .into_inner()
    .payment
    .unwrap();
    assert_eq!(captured.status, PaymentStatus::Captured as i32);
    assert_eq!(captured.captured_amount, Some(eur(10, 0)));
    let after = app
        .processor_operations()
        .await
        .into_iter()
        .find(|op| op.idempotency_key == "l:capture")
        .unwrap();
    assert_eq!(
        after.requests, applied.requests,
        "capture was not sent again"
    );
    app.finish().await;
}
