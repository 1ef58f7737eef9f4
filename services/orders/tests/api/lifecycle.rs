//! An order's life end to end: confirmed, shipped and delivered; declined; out of stock;
//! cancelled before and after capture.

use std::time::Duration;

use shop_proto::{
    orders::{CancelOrderRequest, CancellationReason, OrderStatus},
    payments::PaymentStatus,
    processor::OperationKind,
};

use crate::helpers::{Mesh, statuses};

const WITHIN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn an_order_confirms_ships_and_delivers_and_watch_sees_every_status() {
    let mut mesh = Mesh::start().await;
    let mug = mesh.product(12, 50, 10).await;
    let tea = mesh.product(3, 20, 10).await;
    let order = mesh.place(&[(&mug, 2), (&tea, 1)], "tok_visa").await;
    assert_eq!(order.status, OrderStatus::Pending as i32);
    let total = order.total.clone().expect("total");
    assert_eq!(
        (total.units, total.nanos),
        (28, 200_000_000),
        "2 x 12.50 + 3.20"
    );
    assert!(order.lines[0].sku.starts_with("SKU-"));

    let seen = mesh.watch(&order.order_id, WITHIN).await;
    assert_eq!(
        statuses(&seen),
        [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Shipped,
            OrderStatus::Delivered
        ],
        "WatchOrder sees every status in order"
    );
    let versions: Vec<i64> = seen.iter().map(|o| o.version).collect();
    assert_eq!(versions, [1, 2, 3, 4], "one message per change");

    let delivered = mesh.get(&order.order_id).await;
    assert_eq!(delivered.status, OrderStatus::Delivered as i32);
    assert!(!delivered.shipment_id.is_empty() && !delivered.tracking_number.is_empty());
    assert!(!delivered.reservation_id.is_empty());
    let payment = mesh.payment(&delivered.payment_id).await;
    assert_eq!(payment.status, PaymentStatus::Captured as i32);
    assert_eq!(payment.captured_amount, order.total);
    assert_eq!(
        mesh.approved(&order.order_id, OperationKind::Capture).await,
        1
    );

    let stock = mesh.stock(&mug).await;
    assert_eq!(
        (
            stock.on_hand,
            stock.committed,
            stock.reserved,
            stock.available
        ),
        (10, 2, 0, 8)
    );
    mesh.check_books().await;
    mesh.finish().await;
}

#[tokio::test]
async fn a_declined_card_cancels_with_the_reason_releases_stock_and_captures_nothing() {
    let mut mesh = Mesh::start().await;
    let mug = mesh.product(12, 50, 5).await;
    let order = mesh.place(&[(&mug, 2)], "tok_decline").await;
    let cancelled = mesh
        .wait_status(&order.order_id, OrderStatus::Cancelled, WITHIN)
        .await;
    assert_eq!(
        cancelled.cancellation_reason,
        CancellationReason::PaymentDeclined as i32
    );
    assert!(
        cancelled.cancellation_detail.contains("declined"),
        "{}",
        cancelled.cancellation_detail
    );
    let stock = mesh.stock(&mug).await;
    assert_eq!(
        (stock.reserved, stock.committed, stock.available),
        (0, 0, 5)
    );
    assert_eq!(
        mesh.approved(&order.order_id, OperationKind::Capture).await,
        0
    );
    let runs = mesh.saga_runs().await;
    assert_eq!(runs.get(&("order".into(), "compensated".into())), Some(&1));
    mesh.check_books().await;
    mesh.finish().await;
}

#[tokio::test]
async fn out_of_stock_cancels_and_never_touches_payment() {
    let mut mesh = Mesh::start().await;
    let mug = mesh.product(12, 50, 1).await;
    let order = mesh.place(&[(&mug, 3)], "tok_visa").await;
    let cancelled = mesh
        .wait_status(&order.order_id, OrderStatus::Cancelled, WITHIN)
        .await;
    assert_eq!(
        cancelled.cancellation_reason,
        CancellationReason::OutOfStock as i32
    );
    assert!(
        mesh.operations().await.is_empty(),
        "the processor saw no call for an order that could not be reserved"
    );
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&mesh.payments_pool)
        .await
        .expect("count");
    assert_eq!(payments, 0);
    let stock = mesh.stock(&mug).await;
    assert_eq!((stock.on_hand, stock.available), (1, 1));
    mesh.finish().await;
}

#[tokio::test]
async fn cancelling_a_confirmed_order_refunds_and_restocks() {
    let mut mesh = Mesh::start().await;
    let mug = mesh.product(12, 50, 4).await;
    // A slow carrier would ship before we cancel: cancel right after confirmation instead.
    let order = mesh.place(&[(&mug, 3)], "tok_visa").await;
    mesh.wait_status(&order.order_id, OrderStatus::Confirmed, WITHIN)
        .await;
    let cancelled = mesh
        .orders()
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: "changed my mind".into(),
        })
        .await;
    let cancelled = match cancelled {
        Ok(response) => response.into_inner().order.expect("order"),
        // Shipping was quicker: the order shipped; that is the contract too.
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
            mesh.finish().await;
            return;
        }
    };
    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);
    assert_eq!(
        cancelled.cancellation_reason,
        CancellationReason::CustomerRequested as i32
    );
    let payment_id = cancelled.payment_id.clone();
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let payment = mesh.payment(&payment_id).await;
        let stock = mesh.stock(&mug).await;
        if payment.status == PaymentStatus::Refunded as i32 && stock.available == 4 {
            assert_eq!(payment.refunded_amount, payment.captured_amount);
            assert_eq!(stock.on_hand, 7, "4 + 3 restocked, 3 committed stay sold");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not refunded and restocked: {payment:?} {stock:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Cancelling again changes nothing.
    let again = mesh
        .orders()
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: String::new(),
        })
        .await
        .expect("cancel again")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(again.version, cancelled.version);
    assert_eq!(
        mesh.approved(&order.order_id, OperationKind::Refund).await,
        1
    );
    mesh.check_books().await;
    mesh.finish().await;
}

#[tokio::test]
async fn cancelling_a_pending_order_stops_the_saga_before_capture() {
    let mut mesh = Mesh::start().await;
    let mug = mesh.product(5, 0, 5).await;
    // Authorization takes a while: the customer cancels meanwhile.
    mesh.set_behavior(Duration::from_millis(300), 0.0, false)
        .await;
    let order = mesh.place(&[(&mug, 1)], "tok_visa").await;
    let cancelled = mesh
        .orders()
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: String::new(),
        })
        .await
        .expect("cancel")
        .into_inner()
        .order
        .expect("order");
    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);
    mesh.set_behavior(Duration::ZERO, 0.0, false).await;
    let deadline = tokio::time::Instant::now() + WITHIN;
    while mesh
        .saga_runs()
        .await
        .get(&("order".into(), "compensated".into()))
        != Some(&1)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            mesh.saga_runs().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        mesh.approved(&order.order_id, OperationKind::Capture).await,
        0
    );
    let stock = mesh.stock(&mug).await;
    assert_eq!((stock.reserved, stock.available), (0, 5));
    let final_order = mesh.get(&order.order_id).await;
    assert_eq!(
        final_order.version, cancelled.version,
        "the saga appended nothing after the cancel"
    );
    mesh.check_books().await;
    mesh.finish().await;
}

#[tokio::test]
async fn the_admin_port_shows_orders_sagas_and_each_timeline() {
    let mut mesh = Mesh::start().await;
    let mug = mesh.product(5, 0, 5).await;
    let ok = mesh.place(&[(&mug, 1)], "tok_visa").await;
    let declined = mesh.place(&[(&mug, 1)], "tok_decline").await;
    mesh.wait_status(&ok.order_id, OrderStatus::Confirmed, WITHIN)
        .await;
    mesh.wait_status(&declined.order_id, OrderStatus::Cancelled, WITHIN)
        .await;

    // The order's status and its saga run's end are separate writes: poll until both runs
    // have ended.
    let deadline = tokio::time::Instant::now() + WITHIN;
    let (code, state) = loop {
        let (code, state) = mesh.admin_json("/admin/state").await;
        let ended = state["sagas"]["counts"]["completed"] == 1
            && state["sagas"]["counts"]["compensated"] == 1;
        if ended || tokio::time::Instant::now() >= deadline {
            break (code, state);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(code, 200, "{state}");
    assert_eq!(state["orders"].as_array().map(Vec::len), Some(2));
    assert_eq!(state["sagas"]["counts"]["completed"], 1);
    assert_eq!(state["sagas"]["counts"]["compensated"], 1);
    assert_eq!(state["sagas"]["stuck"].as_array().map(Vec::len), Some(0));
    assert!(state["outbox"]["unpublished"].is_i64());

    let (code, timeline) = mesh
        .admin_json(&format!("/admin/orders/{}/timeline", ok.order_id))
        .await;
    assert_eq!(code, 200);
    let steps: Vec<(String, String)> = timeline["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default().to_owned(),
                s["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let names: Vec<&str> = steps.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        names,
        ["reserve", "authorize", "capture", "commit", "confirm"]
    );
    assert!(
        steps.iter().all(|(_, outcome)| outcome == "ok"),
        "{steps:?}"
    );

    let (_, timeline) = mesh
        .admin_json(&format!("/admin/orders/{}/timeline", declined.order_id))
        .await;
    assert_eq!(timeline["status"], "compensated");
    let phases: Vec<(&str, &str)> = timeline["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default(),
                s["phase"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        phases,
        [
            ("reserve", "action"),
            ("authorize", "action"),
            ("reserve", "compensation"),
            ("cancel", "compensation")
        ]
    );
    let (code, _) = mesh
        .admin_json(&format!(
            "/admin/orders/{}/timeline",
            crate::helpers::uuid()
        ))
        .await;
    assert_eq!(code, 404);
    mesh.finish().await;
}

#[tokio::test]
async fn the_invariant_checker_catches_a_stuck_saga_and_an_order_left_pending() {
    use shop_invariants::Kind;
    let mut mesh = Mesh::start().await;
    let mug = mesh.product(5, 0, 5).await;
    let order = mesh.place(&[(&mug, 1)], "tok_visa").await;
    mesh.wait_status(&order.order_id, OrderStatus::Confirmed, WITHIN)
        .await;
    assert!(mesh.violations().await.is_empty());

    // By hand: park the finished run as stuck, and leave a copy of the order PENDING an hour.
    sqlx::query(
        "UPDATE saga_runs SET status = 'stuck', last_error = 'injected' WHERE id = $1::uuid",
    )
    .bind(&order.order_id)
    .execute(&mesh.orders_pool)
    .await
    .expect("stuck");
    sqlx::query(
        "INSERT INTO order_events (order_id, version, type, payload, occurred_at) \
         SELECT gen_random_uuid(), 1, type, payload, now() - interval '1 hour' \
         FROM order_events WHERE order_id = $1::uuid AND version = 1",
    )
    .bind(&order.order_id)
    .execute(&mesh.orders_pool)
    .await
    .expect("pending copy");
    orders::rebuild_read_model(&mesh.orders_pool)
        .await
        .expect("rebuild");
    let kinds: Vec<Kind> = mesh.check_once().await.iter().map(|v| v.kind).collect();
    assert!(kinds.contains(&Kind::SagaStuck), "{kinds:?}");
    assert!(kinds.contains(&Kind::OrderNotTerminal), "{kinds:?}");
    mesh.finish().await;
}
