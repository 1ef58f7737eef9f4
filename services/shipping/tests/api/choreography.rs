//! OrderConfirmed in, ShipmentScheduled and later ShipmentDelivered out, each exactly once per
//! order however often the order's confirmation arrives; poison events are dead-lettered
//! without wedging the consumer; the delivery schedule survives a restart and is shared by
//! replicas without moving a shipment twice.

use std::{collections::HashSet, time::Duration};

use shop_events::{EventEnvelope, StreamSpec};
use shop_proto::{
    orders::OrderConfirmed,
    shipping::{ShipmentDelivered, ShipmentScheduled, ShipmentStatus},
};
use shop_testkit::{wait_for, wait_until};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{PATIENCE, fast, order_confirmed, spawn_app_with};

fn for_order<'a, T: 'a>(events: &'a [T], order: Uuid, order_of: impl Fn(&T) -> &str + 'a) -> usize {
    let order = order.to_string();
    events.iter().filter(|e| order_of(e) == order).count()
}

#[tokio::test]
async fn a_confirmed_order_ships_once_however_often_its_confirmation_arrives() {
    let app = spawn_app_with(fast).await;
    // The service provisions SHOP_ORDERS before it creates its durable consumer; once the
    // consumer exists, shrink the stream's duplicate window so that the same event id can be
    // stored twice, as a replay after the window (`meshctl dlq replay`, a producer retrying
    // late) would store it. JetStream then no longer deduplicates it: only the inbox can.
    let js = app.js.clone();
    wait_until(PATIENCE, || {
        let js = js.clone();
        async move {
            let Ok(stream) = js.get_stream("SHOP_ORDERS").await else {
                return false;
            };
            stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
                    shipping::CONSUMER_DURABLE,
                )
                .await
                .is_ok()
        }
    })
    .await
    .expect("the service's consumer exists");
    let mut short_window = StreamSpec::for_context("orders");
    short_window.duplicate_window = Duration::from_millis(500);
    short_window.ensure(&app.js).await.unwrap();

    let order = Uuid::now_v7();
    let product = Uuid::now_v7();
    let first = EventEnvelope::new(order_confirmed(order, &[(product, 3)]));
    assert!(!app.publish_envelope(&first).await.duplicate);
    app.wait_applied(first.id).await;
    // The same event (same id) again, stored as a second message once the window has passed.
    wait_for(PATIENCE, || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        (!app.publish_envelope(&first).await.duplicate).then_some(())
    })
    .await
    .expect("the replay is stored, not deduplicated by JetStream");
    // And the same order confirmed under a new event id.
    let again = EventEnvelope::new(order_confirmed(order, &[(product, 3)]));
    app.publish_envelope(&again).await;
    app.wait_applied(again.id).await;
    app.wait_consumer_idle().await;

    let scheduled = app.shipment_of(order).await.unwrap();
    assert_eq!(scheduled.lines.len(), 1);
    assert_eq!(scheduled.lines[0].quantity, 3);
    assert_eq!(scheduled.carrier, "DHL");
    let delivered = app.wait_for_status(order, ShipmentStatus::Delivered).await;
    assert_eq!(delivered.shipment_id, scheduled.shipment_id);
    assert!(delivered.delivered_at.is_some());

    let confirmations: Vec<OrderConfirmed> = crate::helpers::read_orders(&app).await;
    assert_eq!(
        for_order(&confirmations, order, |e| &e.order_id),
        3,
        "three OrderConfirmed messages reached the consumer"
    );
    let scheduled_events: Vec<ShipmentScheduled> =
        app.published(shipping::events::SHIPMENT_SCHEDULED).await;
    assert_eq!(for_order(&scheduled_events, order, |e| &e.order_id), 1);
    let event = &scheduled_events[0];
    assert_eq!(event.shipment_id, scheduled.shipment_id);
    assert_eq!(event.tracking_number, scheduled.tracking_number);
    assert_eq!(event.address.as_ref().unwrap().city, "Berlin");
    assert!(event.estimated_delivery_at.is_some());
    // Delivery comes after scheduling, so wait for its event to be relayed.
    let delivered_events: Vec<ShipmentDelivered> = wait_for(PATIENCE, || async {
        let events: Vec<ShipmentDelivered> =
            app.published(shipping::events::SHIPMENT_DELIVERED).await;
        (!events.is_empty()).then_some(events)
    })
    .await
    .unwrap();
    assert_eq!(for_order(&delivered_events, order, |e| &e.order_id), 1);
    assert_eq!(delivered_events[0].shipment_id, scheduled.shipment_id);
    let shipments: i64 = sqlx::query_scalar("SELECT count(*) FROM shipments")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(shipments, 1);
    // Every copy was handled as a no-op, not failed until dead-lettered.
    assert_eq!(app.dead_letters().await, vec![]);
    app.shutdown().await;
}

#[tokio::test]
async fn poison_events_are_dead_lettered_and_the_consumer_goes_on() {
    let app = spawn_app_with(fast).await;
    // An OrderConfirmed that can never ship (its order id is no UUID) ...
    let mut unshippable = order_confirmed(Uuid::now_v7(), &[(Uuid::now_v7(), 1)]);
    unshippable.order_id = "not-a-uuid".into();
    let poison = app.publish(unshippable).await;
    // ... and a body that is not an OrderConfirmed at all, under valid envelope headers.
    let garbage = EventEnvelope::new(order_confirmed(Uuid::now_v7(), &[]));
    let mut encoded = garbage.encode().unwrap();
    encoded.payload = bytes::Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
    app.publisher.publish_encoded(&encoded).await.unwrap();
    // A good one behind them still ships.
    let order = Uuid::now_v7();
    app.publish(order_confirmed(order, &[(Uuid::now_v7(), 2)]))
        .await;
    app.wait_for_status(order, ShipmentStatus::Delivered).await;

    let dead = wait_for(PATIENCE, || async {
        let dead = app.dead_letters().await;
        (dead.len() >= 2).then_some(dead)
    })
    .await
    .expect("both poison events are dead-lettered");
    assert_eq!(dead.len(), 2, "{dead:?}");
    let ids: HashSet<&str> = dead
        .iter()
        .map(|h| h["shop-dlq-event-id"].as_str())
        .collect();
    assert_eq!(
        ids,
        HashSet::from([poison.to_string().as_str(), garbage.id.to_string().as_str()])
    );
    for letter in &dead {
        assert_eq!(letter["shop-dlq-consumer"], shipping::CONSUMER_DURABLE);
        assert_eq!(letter["shop-dlq-stream"], "SHOP_ORDERS");
    }
    let reasons: Vec<&str> = dead.iter().map(|h| h["shop-dlq-error"].as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("order_id")),
        "the unshippable event names its field: {reasons:?}"
    );
    let shipments: i64 = sqlx::query_scalar("SELECT count(*) FROM shipments")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(shipments, 1, "nothing half-written for the poison events");
    app.shutdown().await;
}

#[tokio::test]
async fn the_delivery_schedule_survives_a_restart() {
    // Picked up two seconds after scheduling, delivered at once after that.
    let mut app = spawn_app_with(|config| {
        config.delivery.pickup_delay_secs = 2.0;
        config.delivery.delivery_delay_secs = 0.0;
        config.delivery.sweep_interval_ms = 50;
    })
    .await;
    let order = Uuid::now_v7();
    app.publish(order_confirmed(order, &[(Uuid::now_v7(), 1)]))
        .await;
    app.wait_for_status(order, ShipmentStatus::Scheduled).await;
    app.stop_service().await;

    // Another process on the same database finds the shipment due and delivers it.
    let replica = app
        .start_replica(|config| {
            config.delivery.delivery_delay_secs = 0.0;
            config.delivery.sweep_interval_ms = 50;
        })
        .await;
    let client = shop_proto::shipping::shipping_service_client::ShippingServiceClient::connect(
        format!("http://{}", replica.grpc_addr),
    )
    .await
    .unwrap();
    app.client = client;
    app.wait_for_status(order, ShipmentStatus::Delivered).await;
    let delivered: Vec<ShipmentDelivered> = wait_for(PATIENCE, || async {
        let events: Vec<ShipmentDelivered> =
            app.published(shipping::events::SHIPMENT_DELIVERED).await;
        (!events.is_empty()).then_some(events)
    })
    .await
    .unwrap();
    assert_eq!(for_order(&delivered, order, |e| &e.order_id), 1);
    replica.shutdown().await;
}

#[tokio::test]
async fn two_replicas_share_the_work_and_move_no_shipment_twice() {
    let app = spawn_app_with(fast).await;
    let second = app.start_replica(fast).await;
    let orders: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    for order in &orders {
        app.publish(order_confirmed(*order, &[(Uuid::now_v7(), 1)]))
            .await;
    }
    let db = app.db.clone();
    wait_until(PATIENCE, || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM shipments WHERE status = 'delivered'",
            )
            .fetch_one(&db)
            .await
            .is_ok_and(|n| n == 30)
        }
    })
    .await
    .expect("every order is delivered");
    let scheduled: Vec<ShipmentScheduled> =
        app.published(shipping::events::SHIPMENT_SCHEDULED).await;
    let delivered: Vec<ShipmentDelivered> =
        app.published(shipping::events::SHIPMENT_DELIVERED).await;
    for order in &orders {
        assert_eq!(for_order(&scheduled, *order, |e| &e.order_id), 1, "{order}");
        assert_eq!(for_order(&delivered, *order, |e| &e.order_id), 1, "{order}");
    }
    assert_eq!((scheduled.len(), delivered.len()), (30, 30));
    assert_eq!(app.dead_letters().await, vec![]);
    second.shutdown().await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_order_without_a_shipment_is_not_found() {
    let app = spawn_app_with(fast).await;
    let err = app.shipment_of(Uuid::now_v7()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    app.shutdown().await;
}
