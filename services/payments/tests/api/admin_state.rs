//! `GET /admin/state` lists every payment with its ledger's balances and capture count, and
//! the outbox, in the shape `meshctl check` reads (`shop_invariants::types::PaymentsState`).

use serde_json::Value;
use shop_invariants::types::{PaymentStatus, PaymentsState};
use shop_proto::payments::{Payment, RefundRequest, VoidRequest};
use shop_testkit::http_get;

use crate::helpers::{TestApp, capture_request, eur, spawn_app};

/// Three payments: captured 80.50 of 100, voided, captured 10 and refunded in full.
pub async fn three_payments(app: &mut TestApp) -> [Payment; 3] {
    let captured = app.authorize("a:authorize", eur(100, 0)).await;
    app.client
        .capture(capture_request("a:capture", &captured, eur(80, 50)))
        .await
        .unwrap();
    let voided = app.authorize("b:authorize", eur(20, 0)).await;
    app.client
        .void(VoidRequest {
            payment_id: voided.payment_id.clone(),
            idempotency_key: "b:void".into(),
        })
        .await
        .unwrap();
    let refunded = app.authorize("c:authorize", eur(10, 0)).await;
    app.client
        .capture(capture_request("c:capture", &refunded, eur(10, 0)))
        .await
        .unwrap();
    app.client
        .refund(RefundRequest {
            payment_id: refunded.payment_id.clone(),
            amount: Some(eur(10, 0)),
            idempotency_key: "c:refund".into(),
            reason: "order cancelled".into(),
        })
        .await
        .unwrap();
    [captured, voided, refunded]
}

#[tokio::test]
async fn admin_state_lists_payments_with_their_ledger_and_the_outbox() {
    let mut app = spawn_app().await;
    let (code, body) = http_get(app.admin_addr, "/admin/state").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let empty: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(empty["payments"], Value::Array(vec![]));

    let [captured, voided, refunded] = three_payments(&mut app).await;
    let (code, body) = http_get(app.admin_addr, "/admin/state").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let raw: Value = serde_json::from_str(&body).unwrap();
    let mut keys: Vec<&str> = raw["payments"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "authorized_minor",
            "captured_minor",
            "captures",
            "created_at",
            "currency",
            "order_id",
            "payment_id",
            "refunded_minor",
            "status",
            "updated_at"
        ]
    );
    assert_eq!(raw["payments"][0]["status"], "CAPTURED");

    let state: PaymentsState = serde_json::from_str(&body).unwrap();
    let rows: Vec<_> = state
        .payments
        .iter()
        .map(|p| {
            (
                p.payment_id.as_str(),
                p.order_id.as_str(),
                p.status,
                p.currency.as_str(),
                (p.authorized_minor, p.captured_minor, p.refunded_minor),
                p.captures,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                captured.payment_id.as_str(),
                captured.order_id.as_str(),
                PaymentStatus::Captured,
                "EUR",
                (10_000, 8050, 0),
                1
            ),
            (
                voided.payment_id.as_str(),
                voided.order_id.as_str(),
                PaymentStatus::Voided,
                "EUR",
                (2000, 0, 0),
                0
            ),
            (
                refunded.payment_id.as_str(),
                refunded.order_id.as_str(),
                PaymentStatus::Refunded,
                "EUR",
                (1000, 1000, 1000),
                1
            ),
        ]
    );
    assert!(state.payments[0].updated_at >= state.payments[0].created_at);
    assert_eq!(state.outbox.parked, 0);
    app.finish().await;
}
