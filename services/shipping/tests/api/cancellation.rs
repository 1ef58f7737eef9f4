//! GetShipment by either id; CancelShipment before pickup (once, idempotent), refused after;
//! OrderCancelled cancels a shipment not yet picked up, keeps one on the road, and prevents
//! one whose confirmation arrives late.

use shop_proto::{
    orders::{CancellationReason, OrderCancelled, OrderStatus},
    shipping::{
        CancelShipmentRequest, GetShipmentRequest, Shipment, ShipmentCancelled, ShipmentStatus,
        get_shipment_request::Lookup,
    },
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{
    TestApp, error_info, fast, never_picked_up, order_confirmed, spawn_app_with, stays_in_transit,
    violated_fields,
};

fn order_cancelled(order_id: Uuid) -> OrderCancelled {
    OrderCancelled {
        order_id: order_id.to_string(),
        customer_id: Uuid::now_v7().to_string(),
        reason: CancellationReason::CustomerRequested as i32,
        detail: "changed my mind".into(),
        previous_status: OrderStatus::Confirmed as i32,
        ..Default::default()
    }
}

async fn cancel(app: &TestApp, id: &str, reason: &str) -> Result<Shipment, tonic::Status> {
    app.client
        .clone()
        .cancel_shipment(CancelShipmentRequest {
            shipment_id: id.to_owned(),
            reason: reason.to_owned(),
        })
        .await
        .map(|r| r.into_inner().shipment.unwrap())
}

async fn cancellations(app: &TestApp, order: Uuid) -> usize {
    let events: Vec<ShipmentCancelled> = app.published(shipping::events::SHIPMENT_CANCELLED).await;
    events
        .iter()
        .filter(|e| e.order_id == order.to_string())
        .count()
}

/// Schedules a shipment for a fresh order and returns both.
async fn scheduled(app: &TestApp) -> (Uuid, Shipment) {
    let order = Uuid::now_v7();
    app.publish(order_confirmed(
        order,
        &[(Uuid::now_v7(), 1), (Uuid::now_v7(), 4)],
    ))
    .await;
    let shipment = app.wait_for_status(order, ShipmentStatus::Scheduled).await;
    (order, shipment)
}

#[tokio::test]
async fn get_shipment_reads_by_shipment_id_and_by_order_id() {
    let app = spawn_app_with(never_picked_up).await;
    let (order, by_order) = scheduled(&app).await;
    let by_id = app
        .client
        .clone()
        .get_shipment(GetShipmentRequest {
            lookup: Some(Lookup::ShipmentId(by_order.shipment_id.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .shipment
        .unwrap();
    assert_eq!(by_id, by_order);
    assert_eq!(by_id.order_id, order.to_string());
    assert_eq!(by_id.lines.len(), 2);
    let cost = by_id.cost.unwrap();
    // One parcel of 5 units at home: 4.90 + 5 x 0.10 EUR, the order's currency.
    assert_eq!(
        (cost.units, cost.nanos, cost.currency_code.as_str()),
        (5, 400_000_000, "EUR")
    );
    assert!(by_id.estimated_delivery_at.is_some() && by_id.delivered_at.is_none());
    let missing = app
        .client
        .clone()
        .get_shipment(GetShipmentRequest {
            lookup: Some(Lookup::ShipmentId(Uuid::now_v7().to_string())),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    app.shutdown().await;
}

#[tokio::test]
async fn cancel_shipment_cancels_before_pickup_once_and_again_is_a_no_op() {
    let app = spawn_app_with(never_picked_up).await;
    let (order, shipment) = scheduled(&app).await;
    let cancelled = cancel(&app, &shipment.shipment_id, "customer moved")
        .await
        .unwrap();
    assert_eq!(cancelled.status, ShipmentStatus::Cancelled as i32);
    let again = cancel(&app, &shipment.shipment_id, "another reason")
        .await
        .unwrap();
    assert_eq!(again, cancelled, "a second cancel changes nothing");
    assert_eq!(
        cancellations(&app, order).await,
        1,
        "ShipmentCancelled once"
    );
    let events: Vec<ShipmentCancelled> = app.published(shipping::events::SHIPMENT_CANCELLED).await;
    assert_eq!(events[0].reason, "customer moved");
    assert_eq!(events[0].shipment_id, shipment.shipment_id);

    let unknown = cancel(&app, &Uuid::now_v7().to_string(), "")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    // An OrderCancelled for the same order now has nothing left to cancel.
    let late = app.publish(order_cancelled(order)).await;
    app.wait_applied(late).await;
    assert_eq!(cancellations(&app, order).await, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn order_cancelled_before_pickup_cancels_the_shipment_once() {
    let app = spawn_app_with(never_picked_up).await;
    let (order, shipment) = scheduled(&app).await;
    let first = app.publish(order_cancelled(order)).await;
    let cancelled = app.wait_for_status(order, ShipmentStatus::Cancelled).await;
    assert_eq!(cancelled.shipment_id, shipment.shipment_id);
    app.wait_applied(first).await;
    // Cancelled again under another event id: nothing more happens.
    let second = app.publish(order_cancelled(order)).await;
    app.wait_applied(second).await;
    assert_eq!(cancellations(&app, order).await, 1);
    let events: Vec<ShipmentCancelled> = app.published(shipping::events::SHIPMENT_CANCELLED).await;
    assert_eq!(
        events[0].reason,
        "order cancelled (CUSTOMER_REQUESTED): changed my mind"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_order_cancelled_before_its_confirmation_arrives_is_never_shipped() {
    let app = spawn_app_with(fast).await;
    let order = Uuid::now_v7();
    let cancelled = app.publish(order_cancelled(order)).await;
    app.wait_applied(cancelled).await;
    let confirmed = app
        .publish(order_confirmed(order, &[(Uuid::now_v7(), 1)]))
        .await;
    app.wait_applied(confirmed).await;
    let err = app.shipment_of(order).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let scheduled: Vec<shop_proto::shipping::ShipmentScheduled> =
        app.published(shipping::events::SHIPMENT_SCHEDULED).await;
    assert!(scheduled.is_empty(), "{scheduled:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn after_pickup_nothing_cancels_a_shipment() {
    let app = spawn_app_with(stays_in_transit).await;
    let order = Uuid::now_v7();
    app.publish(order_confirmed(order, &[(Uuid::now_v7(), 1)]))
        .await;
    let shipment = app.wait_for_status(order, ShipmentStatus::InTransit).await;
    let err = cancel(&app, &shipment.shipment_id, "too late")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(violated_fields(&err), vec!["shipment_id"]);
    assert_eq!(
        error_info(&err),
        Some(("SHIPMENT_IN_TRANSIT".into(), "IN_TRANSIT".into()))
    );
    // The order is cancelled (refunded) after pickup: the parcel stays on the road.
    let event = app.publish(order_cancelled(order)).await;
    app.wait_applied(event).await;
    let after = app.shipment_of(order).await.unwrap();
    assert_eq!(after.status, ShipmentStatus::InTransit as i32);
    assert_eq!(cancellations(&app, order).await, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_delivered_shipment_cannot_be_cancelled() {
    let app = spawn_app_with(fast).await;
    let order = Uuid::now_v7();
    app.publish(order_confirmed(order, &[(Uuid::now_v7(), 1)]))
        .await;
    let shipment = app.wait_for_status(order, ShipmentStatus::Delivered).await;
    let err = cancel(&app, &shipment.shipment_id, "").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        error_info(&err),
        Some(("SHIPMENT_DELIVERED".into(), "DELIVERED".into()))
    );
    assert_eq!(cancellations(&app, order).await, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn confirmations_and_cancellations_racing_leave_no_cancelled_order_shipping() {
    // Eight handlers at once: each order's OrderConfirmed and OrderCancelled, published back to
    // back, are handled in either order or at the same time.
    let app = spawn_app_with(|config| {
        never_picked_up(config);
        config.delivery.consumer_concurrency = 8;
    })
    .await;
    let orders: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    for order in &orders {
        app.publish(order_confirmed(*order, &[(Uuid::now_v7(), 1)]))
            .await;
        app.publish(order_cancelled(*order)).await;
    }
    app.wait_consumer_idle().await;
    let scheduled: Vec<shop_proto::shipping::ShipmentScheduled> =
        app.published(shipping::events::SHIPMENT_SCHEDULED).await;
    let cancelled: Vec<ShipmentCancelled> =
        app.published(shipping::events::SHIPMENT_CANCELLED).await;
    for order in &orders {
        let id = order.to_string();
        let was_scheduled = scheduled.iter().filter(|e| e.order_id == id).count();
        let was_cancelled = cancelled.iter().filter(|e| e.order_id == id).count();
        assert!(was_scheduled <= 1, "{order}");
        assert_eq!(
            was_scheduled, was_cancelled,
            "{order}: scheduled, so cancelled"
        );
        match app.shipment_of(*order).await {
            Ok(shipment) => assert_eq!(shipment.status, ShipmentStatus::Cancelled as i32),
            Err(status) => assert_eq!(status.code(), Code::NotFound),
        }
    }
    assert_eq!(app.dead_letters().await, vec![]);
    app.shutdown().await;
}

#[tokio::test]
async fn cancelled_orders_are_forgotten_after_the_inbox_retention() {
    let app = spawn_app_with(|config| config.inbox.inbox_purge_interval_secs = 0.2).await;
    let (old, recent) = (Uuid::now_v7(), Uuid::now_v7());
    for (order, age_days) in [(old, 9), (recent, 1)] {
        sqlx::query(
            "INSERT INTO cancelled_orders (order_id, cancelled_at) \
             VALUES ($1, now() - make_interval(days => $2))",
        )
        .bind(order)
        .bind(age_days)
        .execute(&app.db)
        .await
        .unwrap();
    }
    let remembered = || async {
        sqlx::query_scalar::<_, Uuid>("SELECT order_id FROM cancelled_orders")
            .fetch_all(&app.db)
            .await
            .unwrap()
    };
    shop_testkit::wait_until(crate::helpers::PATIENCE, || async {
        remembered().await == vec![recent]
    })
    .await
    .expect("older than the 8-day retention: forgotten; younger: kept");
    app.shutdown().await;
}
