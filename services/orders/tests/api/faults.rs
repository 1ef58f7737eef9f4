//! The order flow under a failing processor: transient failures are retried with the same keys
//! and orders still confirm; a processor that is down gets orders cancelled fast, and the
//! payment is settled once the processor is back.

use std::time::{Duration, Instant};

use shop_proto::{
    orders::{CancellationReason, OrderStatus},
    processor::OperationKind,
};

use crate::helpers::{Mesh, MeshOptions, fast_saga};
use orders::SagaConfig;

#[tokio::test]
async fn thirty_percent_processor_failures_still_confirm_every_order_once() {
    // On a loaded machine a processor attempt also times out now and then (400 ms in the
    // mesh's payments config), which adds to the 30 %: give each step more attempts (about
    // 12 s of retries) so that the test shows retries with the same keys, not the rare run
    // of eight failures in a row that rightly cancels an order.
    let mut mesh = Mesh::start_with(MeshOptions {
        saga: SagaConfig {
            saga_max_attempts: 16,
            ..fast_saga()
        },
        ..MeshOptions::default()
    })
    .await;
    let mug = mesh.product(4, 0, 100).await;
    mesh.set_behavior(Duration::ZERO, 0.3, false).await;
    let mut orders = Vec::new();
    for _ in 0..10 {
        orders.push(mesh.place(&[(&mug, 1)], "tok_visa").await.order_id);
    }
    for order_id in &orders {
        mesh.wait_status(order_id, OrderStatus::Confirmed, Duration::from_secs(60))
            .await;
    }
    for order_id in &orders {
        assert_eq!(mesh.approved(order_id, OperationKind::Authorize).await, 1);
        assert_eq!(mesh.approved(order_id, OperationKind::Capture).await, 1);
    }
    let requests = mesh
        .processor
        .get_behavior(shop_proto::processor::GetBehaviorRequest {})
        .await
        .expect("behavior")
        .into_inner()
        .requests_total;
    assert!(
        requests > 20,
        "the processor saw retries ({requests} requests for 20 operations)"
    );
    assert_eq!(mesh.stock(&mug).await.committed, 10);
    mesh.check_books().await;
    mesh.finish().await;
}

#[tokio::test]
async fn a_processor_that_is_down_gets_orders_cancelled_fast_and_settled_later() {
    let mut mesh = Mesh::start().await;
    let mug = mesh.product(4, 0, 10).await;
    mesh.set_behavior(Duration::ZERO, 0.0, true).await;
    let started = Instant::now();
    let mut orders = Vec::new();
    for _ in 0..3 {
        orders.push(mesh.place(&[(&mug, 2)], "tok_visa").await.order_id);
    }
    for order_id in &orders {
        let cancelled = mesh
            .wait_status(order_id, OrderStatus::Cancelled, Duration::from_secs(45))
            .await;
        assert_eq!(
            cancelled.cancellation_reason,
            CancellationReason::PaymentFailed as i32,
            "{}",
            cancelled.cancellation_detail
        );
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "cancelled within a bounded time, not piled up: {took:?}"
    );
    let stock = mesh.stock(&mug).await;
    assert_eq!(
        (stock.reserved, stock.available),
        (0, 10),
        "stock released without waiting for the processor"
    );
    // Back up: the undo runs settle whatever the processor may hold.
    mesh.set_behavior(Duration::ZERO, 0.0, false).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = mesh.saga_runs().await;
        let undone = runs
            .get(&("order-undo".into(), "completed".into()))
            .copied()
            .unwrap_or(0);
        let pending = runs
            .iter()
            .filter(|((kind, status), _)| kind == "order-undo" && status != "completed")
            .map(|(_, n)| n)
            .sum::<i64>();
        if pending == 0 && undone > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "undo runs did not finish: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for order_id in &orders {
        assert_eq!(mesh.approved(order_id, OperationKind::Capture).await, 0);
    }
    mesh.check_books().await;
    mesh.finish().await;
}
