//! Every mutating call is idempotent by its key: a retry gets the first answer and moves no
//! money; the same key with another request is refused naming the key.

use shop_proto::payments::{
    AuthorizeRequest, PaymentStatus, RefundRequest, RefundResponse, VoidRequest,
};
use tonic::Code;

use crate::helpers::{authorize_request, capture_request, eur, spawn_app, violated_fields};

fn refund(payment_id: &str, key: &str, cents: i32, reason: &str) -> RefundRequest {
    RefundRequest {
        payment_id: payment_id.into(),
        amount: Some(eur(0, cents)),
        idempotency_key: key.into(),
        reason: reason.into(),
    }
}

#[tokio::test]
async fn a_retry_returns_the_first_answer_and_moves_no_money() {
    let mut app = spawn_app().await;
    let request = authorize_request("k:authorize", eur(10, 0), "tok_visa");
    let first = app
        .client
        .authorize(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = app.client.authorize(request).await.unwrap().into_inner();
    assert_eq!(first, again);
    let payment = first.payment.unwrap();

    let capture = capture_request("k:capture", &payment, eur(9, 0));
    let captured = app
        .client
        .capture(capture.clone())
        .await
        .unwrap()
        .into_inner();
    let id = &payment.payment_id;
    let refunded: RefundResponse = app
        .client
        .refund(refund(id, "k:refund", 50, "late"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        refunded.payment.as_ref().unwrap().status,
        PaymentStatus::PartiallyRefunded as i32
    );
    // The payment moved on; the capture's retry still gets the capture's answer.
    let replayed = app.client.capture(capture).await.unwrap().into_inner();
    assert_eq!(replayed, captured);
    assert_eq!(
        replayed.payment.unwrap().status,
        PaymentStatus::Captured as i32
    );
    let refund_again = app
        .client
        .refund(refund(id, "k:refund", 50, "late"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refund_again, refunded);

    // Replays are answered by payments itself: each key reached the processor once.
    for op in app.processor_operations().await {
        assert_eq!(op.requests, 1, "{op:?}");
    }
    app.finish().await;
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused_naming_the_key() {
    let mut app = spawn_app().await;
    let payment = app.authorize("r:authorize", eur(10, 0)).await;
    let other = app.authorize("r:other", eur(10, 0)).await;
    let id = payment.payment_id.clone();

    let mut changed = authorize_request("r:authorize", eur(11, 0), "tok_visa");
    let err = app.client.authorize(changed.clone()).await.unwrap_err();
    assert_key_refused(&err);
    changed.amount = Some(eur(10, 0)); // same amount, but another order and customer
    assert_key_refused(&app.client.authorize(changed).await.unwrap_err());

    // An authorization's key reused for a capture.
    let err = app
        .client
        .capture(capture_request("r:authorize", &payment, eur(1, 0)))
        .await
        .unwrap_err();
    assert_key_refused(&err);

    app.client
        .capture(capture_request("r:capture", &payment, eur(5, 0)))
        .await
        .unwrap();
    let err = app
        .client
        .capture(capture_request("r:capture", &payment, eur(6, 0)))
        .await
        .unwrap_err();
    assert_key_refused(&err);

    app.client
        .refund(refund(&id, "r:refund", 10, "late"))
        .await
        .unwrap();
    for changed in [
        refund(&id, "r:refund", 11, "late"),
        refund(&id, "r:refund", 10, "broken"),
        refund(&other.payment_id, "r:refund", 10, "late"),
    ] {
        assert_key_refused(&app.client.refund(changed).await.unwrap_err());
    }

    app.client
        .void(VoidRequest {
            payment_id: other.payment_id.clone(),
            idempotency_key: "r:void".into(),
        })
        .await
        .unwrap();
    let err = app
        .client
        .void(VoidRequest {
            payment_id: id.clone(),
            idempotency_key: "r:void".into(),
        })
        .await
        .unwrap_err();
    assert_key_refused(&err);
    app.finish().await;
}

fn assert_key_refused(err: &tonic::Status) {
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(violated_fields(err), vec!["idempotency_key"]);
}

#[tokio::test]
async fn concurrent_calls_with_one_key_authorize_once() {
    let app = spawn_app().await;
    let request: AuthorizeRequest = authorize_request("c:authorize", eur(3, 0), "tok_visa");
    let calls = (0..8).map(|_| {
        let mut client = app.client.clone();
        let request = request.clone();
        tokio::spawn(async move { client.authorize(request).await })
    });
    let mut ids = Vec::new();
    for call in calls {
        // A twin that finds the key pending asks the processor, or sends the same key again:
        // every one gets the payment, none a second one.
        let answer = call.await.unwrap().unwrap().into_inner();
        ids.push(answer.payment.unwrap().payment_id);
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    app.finish().await;
}
