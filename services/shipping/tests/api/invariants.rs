//! The invariant checker (`shop_invariants`) on the real service, with orders' state made by
//! hand: a shipment of a confirmed order passes; one whose order is cancelled, and a second
//! shipment for one order injected behind the API, are found.

use std::time::Duration;

use shop_invariants::types::{Money, Order, OrderStatus, OrdersState, OutboxState, Sagas};
use shop_invariants::{Kind, Targets, Violation, check, collect};
use shop_proto::shipping::{ShipmentDelivered, ShipmentStatus};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{TestApp, fast, order_confirmed, spawn_app_with};

/// Orders' state holding `order` in `status`, settled an hour ago.
fn orders_state(order: Uuid, status: OrderStatus) -> OrdersState {
    let an_hour_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
    OrdersState {
        orders: vec![Order {
            order_id: order.to_string(),
            customer_id: "customer".into(),
            status,
            reservation_id: String::new(),
            payment_id: String::new(),
            total: Money {
                units: 9,
                nanos: 0,
                currency_code: "EUR".into(),
            },
            lines: vec![],
            created_at: an_hour_ago,
            updated_at: an_hour_ago,
        }],
        sagas: Sagas::default(),
        outbox: OutboxState::default(),
    }
}

/// Shipping's state and JetStream, checked with `orders` and no grace period.
async fn violations(app: &TestApp, orders: OrdersState) -> Vec<Violation> {
    let targets = Targets {
        shipping: Some(app.admin_addr),
        nats_url: Some(app.nats.url()),
        ..Targets::default()
    };
    let mut state = collect(&targets).await.unwrap();
    state.orders = Some(orders);
    check(&state, Duration::ZERO, OffsetDateTime::now_utc())
}

#[tokio::test]
async fn the_checker_finds_shipments_without_a_confirmed_order_and_duplicates() {
    let app = spawn_app_with(fast).await;
    let order = Uuid::now_v7();
    app.publish(order_confirmed(order, &[(Uuid::now_v7(), 1)]))
        .await;
    let shipment = app.wait_for_status(order, ShipmentStatus::Delivered).await;
    // Waits for the relay: the outbox is empty when read.
    let _: Vec<ShipmentDelivered> = app.published(shipping::events::SHIPMENT_DELIVERED).await;

    // Shipping's consumer of order events has applied everything: nothing to report.
    let found = violations(&app, orders_state(order, OrderStatus::Delivered)).await;
    assert!(found.is_empty(), "{found:#?}");

    // Orders says the order was cancelled, yet its goods went out.
    let found = violations(&app, orders_state(order, OrderStatus::Cancelled)).await;
    let got: Vec<_> = found.iter().map(|v| (v.kind, v.subject.clone())).collect();
    assert_eq!(
        got,
        [(
            Kind::ShipmentWithoutConfirmedOrder,
            format!("shipment {}", shipment.shipment_id)
        )],
        "{found:#?}"
    );

    // A second shipment for the order, past the schema's uniqueness.
    sqlx::raw_sql(
        "ALTER TABLE shipments DROP CONSTRAINT shipments_order_id_key; \
         CREATE TEMP TABLE copy AS SELECT * FROM shipments; \
         UPDATE copy SET id = gen_random_uuid(), tracking_number = tracking_number || '-2'; \
         INSERT INTO shipments SELECT * FROM copy; \
         DROP TABLE copy",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let found = violations(&app, orders_state(order, OrderStatus::Delivered)).await;
    assert_eq!(
        found.iter().map(|v| v.kind).collect::<Vec<_>>(),
        [Kind::DuplicateShipment],
        "{found:#?}"
    );
    assert_eq!(found[0].subject, format!("order {order}"));
    app.shutdown().await;
}
