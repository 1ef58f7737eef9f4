//! Bad input names its field: INVALID_ARGUMENT for a wrong value, FAILED_PRECONDITION for one
//! that does not fit the payment, NOT_FOUND for an unknown payment; never INTERNAL, and nothing
//! is written (the ledger check at the end sees no stray movement).

use shop_proto::common::Money;
use shop_proto::payments::{GetPaymentRequest, RefundRequest, VoidRequest};
use tonic::Code;

use crate::helpers::{authorize_request, capture_request, eur, spawn_app, uuid, violated_fields};

fn money(units: i64, nanos: i32, currency: &str) -> Money {
    Money {
        units,
        nanos,
        currency_code: currency.into(),
    }
}

#[tokio::test]
async fn bad_authorizations_name_the_field() {
    let mut app = spawn_app().await;
    let cases = [
        ("amount", money(0, 0, "EUR")),
        ("amount", money(1, 1_000_000, "EUR")), // a tenth of a cent
        ("amount", money(100, 500_000_000, "JPY")), // yen have no minor unit
        ("amount.units", money(-5, 0, "EUR")),
        ("amount.units", money(i64::MAX, 0, "EUR")),
        ("amount.nanos", money(1, -1, "EUR")),
        ("amount.currency_code", money(1, 0, "XXX")),
    ];
    for (i, (field, amount)) in cases.into_iter().enumerate() {
        let request = authorize_request(&format!("bad-{i}"), amount.clone(), "tok_visa");
        let err = app.client.authorize(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{amount:?}: {err:?}");
        assert_eq!(violated_fields(&err), vec![field], "{amount:?}");
    }
    let mut request = authorize_request("no-token", eur(1, 0), "");
    let err = app.client.authorize(request.clone()).await.unwrap_err();
    assert_eq!(violated_fields(&err), vec!["payment_method_token"]);
    request.payment_method_token = "tok_visa".into();
    request.idempotency_key = String::new();
    let err = app.client.authorize(request.clone()).await.unwrap_err();
    assert_eq!(violated_fields(&err), vec!["idempotency_key"]);
    request.idempotency_key = "bad-order".into();
    request.order_id = "not-a-uuid".into();
    let err = app.client.authorize(request).await.unwrap_err();
    assert_eq!(violated_fields(&err), vec!["order_id"]);
    app.finish().await;
}

#[tokio::test]
async fn amounts_that_do_not_fit_the_payment_are_failed_preconditions() {
    let mut app = spawn_app().await;
    let payment = app.authorize("p:authorize", eur(10, 0)).await;
    let cases = [
        ("amount", eur(10, 1)),
        ("amount.currency_code", money(5, 0, "USD")),
    ];
    for (field, amount) in cases {
        let err = app
            .client
            .capture(capture_request("p:capture", &payment, amount))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert_eq!(violated_fields(&err), vec![field]);
    }
    let err = app
        .client
        .capture(capture_request("p:capture", &payment, eur(0, 0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(violated_fields(&err), vec!["amount"]);

    let refund = |key: &str, amount| RefundRequest {
        payment_id: payment.payment_id.clone(),
        amount: Some(amount),
        idempotency_key: key.into(),
        reason: String::new(),
    };
    // Not captured yet.
    let err = app
        .client
        .refund(refund("p:refund", eur(1, 0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(violated_fields(&err), vec!["payment_id"]);
    // A refused key was not used up: the same key works once the request fits.
    app.client
        .capture(capture_request("p:capture", &payment, eur(4, 0)))
        .await
        .unwrap();
    let err = app
        .client
        .refund(refund("p:refund", eur(4, 1)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(violated_fields(&err), vec!["amount"]);
    let err = app
        .client
        .refund(refund("p:refund", money(1, 0, "GBP")))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["amount.currency_code"]);
    app.client
        .refund(refund("p:refund", eur(4, 0)))
        .await
        .unwrap();
    app.finish().await;
}

#[tokio::test]
async fn unknown_payments_are_not_found_and_bad_ids_invalid() {
    let mut app = spawn_app().await;
    let ghost = shop_proto::payments::Payment {
        payment_id: uuid(),
        ..Default::default()
    };
    let err = app
        .client
        .capture(capture_request("g:capture", &ghost, eur(1, 0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = app
        .client
        .void(VoidRequest {
            payment_id: ghost.payment_id.clone(),
            idempotency_key: "g:void".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = app
        .client
        .get_payment(GetPaymentRequest {
            payment_id: ghost.payment_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = app
        .client
        .get_payment(GetPaymentRequest {
            payment_id: "42".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(violated_fields(&err), vec!["payment_id"]);
    app.finish().await;
}
