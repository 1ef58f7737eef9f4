//! A payment's life: authorize, capture, refund, void, decline, read; and the events.

use shop_proto::payments::{GetPaymentRequest, PaymentStatus, RefundRequest, VoidRequest};
use tonic::Code;

use crate::helpers::{authorize_request, capture_request, eur, spawn_app, violated_fields};

#[tokio::test]
async fn authorize_capture_and_refunds_move_money_through_the_ledger() {
    let mut app = spawn_app().await;
    let payment = app.authorize("o1:authorize", eur(100, 0)).await;
    assert_eq!(payment.status, PaymentStatus::Authorized as i32);
    assert_eq!(payment.authorized_amount, Some(eur(100, 0)));
    assert_eq!(payment.captured_amount, Some(eur(0, 0)));
    assert!(!payment.processor_reference.is_empty());

    let captured = app
        .client
        .capture(capture_request("o1:capture", &payment, eur(80, 50)))
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(captured.status, PaymentStatus::Captured as i32);
    assert_eq!(captured.captured_amount, Some(eur(80, 50)));

    let refund = |key: &str, amount| RefundRequest {
        payment_id: payment.payment_id.clone(),
        amount: Some(amount),
        idempotency_key: key.into(),
        reason: "damaged".into(),
    };
    let partly = app
        .client
        .refund(refund("o1:refund-1", eur(30, 25)))
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(partly.status, PaymentStatus::PartiallyRefunded as i32);
    assert_eq!(partly.refunded_amount, Some(eur(30, 25)));
    let whole = app
        .client
        .refund(refund("o1:refund-2", eur(50, 25)))
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(whole.status, PaymentStatus::Refunded as i32);
    assert_eq!(whole.refunded_amount, Some(eur(80, 50)));
    let err = app
        .client
        .refund(refund("o1:refund-3", eur(0, 1)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(violated_fields(&err), vec!["payment_id"]);

    let read = app
        .client
        .get_payment(GetPaymentRequest {
            payment_id: payment.payment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(read, whole);
    app.wait_for_events(&[
        (payments::events::PAYMENT_AUTHORIZED, 1),
        (payments::events::PAYMENT_CAPTURED, 1),
        (payments::events::PAYMENT_REFUNDED, 2),
    ])
    .await;
    app.finish().await;
}

#[tokio::test]
async fn void_drops_the_hold_and_publishes_payment_voided() {
    let mut app = spawn_app().await;
    let payment = app.authorize("o2:authorize", eur(20, 0)).await;
    let voided = app
        .client
        .void(VoidRequest {
            payment_id: payment.payment_id.clone(),
            idempotency_key: "o2:void".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .payment
        .unwrap();
    assert_eq!(voided.status, PaymentStatus::Voided as i32);
    let err = app
        .client
        .capture(capture_request("o2:capture", &payment, eur(20, 0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(violated_fields(&err), vec!["payment_id"]);
    app.wait_for_events(&[
        (payments::events::PAYMENT_AUTHORIZED, 1),
        (payments::events::PAYMENT_VOIDED, 1),
    ])
    .await;
    app.finish().await;
}

#[tokio::test]
async fn decline_tokens_are_declined_payments_not_errors() {
    let mut app = spawn_app().await;
    for (token, reason) in [
        ("tok_decline", "card_declined"),
        ("tok_insufficient", "insufficient_funds"),
    ] {
        let payment = app
            .client
            .authorize(authorize_request(token, eur(5, 0), token))
            .await
            .unwrap()
            .into_inner()
            .payment
            .unwrap();
        assert_eq!(payment.status, PaymentStatus::Declined as i32);
        assert_eq!(payment.failure_reason, reason);
        let err = app
            .client
            .capture(capture_request(
                &format!("{token}:capture"),
                &payment,
                eur(5, 0),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    }
    // Nothing moved, nothing was announced.
    app.wait_for_events(&[]).await;
    app.finish().await;
}
