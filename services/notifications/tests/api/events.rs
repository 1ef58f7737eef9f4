//! Events become notifications; bad events are dead-lettered without stopping the consumer.

use std::time::Duration;

use shop_proto::{
    common::Money,
    identity::UserRegistered,
    notifications::{ListNotificationsRequest, NotificationKind, WatchNotificationsRequest},
    orders::{OrderCancelled, OrderConfirmed},
    shipping::ShipmentScheduled,
};
use shop_testkit::wait_for;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};

async fn listed(app: &TestApp, user: &str, page_size: i32, token: &str) -> (Vec<i32>, String) {
    let page = app
        .client
        .clone()
        .list_notifications(ListNotificationsRequest {
            user_id: user.into(),
            page_size,
            page_token: token.into(),
        })
        .await
        .unwrap()
        .into_inner();
    (
        page.notifications.iter().map(|n| n.kind).collect(),
        page.next_page_token,
    )
}

async fn wait_for_count(app: &TestApp, user: &str, count: usize) {
    wait_for(Duration::from_secs(30), || async {
        (listed(app, user, 100, "").await.0.len() >= count).then_some(())
    })
    .await
    .expect("notifications arrive");
}

#[tokio::test]
async fn order_and_shipping_events_become_notifications_listed_newest_first() {
    let app = spawn_app().await;
    let customer = Uuid::now_v7().to_string();
    let order = Uuid::now_v7().to_string();
    app.publish(OrderConfirmed {
        order_id: order.clone(),
        customer_id: customer.clone(),
        total: Some(Money {
            units: 42,
            nanos: 500_000_000,
            currency_code: "EUR".into(),
        }),
        ..Default::default()
    })
    .await;
    wait_for_count(&app, &customer, 1).await;
    app.publish(ShipmentScheduled {
        shipment_id: Uuid::now_v7().to_string(),
        order_id: order.clone(),
        customer_id: customer.clone(),
        carrier: "ACME".into(),
        tracking_number: "T-1".into(),
        ..Default::default()
    })
    .await;
    wait_for_count(&app, &customer, 2).await;
    app.publish(OrderCancelled {
        order_id: order,
        customer_id: customer.clone(),
        detail: "changed my mind".into(),
        ..Default::default()
    })
    .await;
    wait_for_count(&app, &customer, 3).await;

    let (first, token) = listed(&app, &customer, 2, "").await;
    assert_eq!(
        first,
        vec![
            NotificationKind::OrderCancelled as i32,
            NotificationKind::ShipmentScheduled as i32
        ]
    );
    let (second, last) = listed(&app, &customer, 2, &token).await;
    assert_eq!(second, vec![NotificationKind::OrderConfirmed as i32]);
    assert!(last.is_empty());

    // A token is bound to its user.
    let other = Uuid::now_v7().to_string();
    let err = app
        .client
        .clone()
        .list_notifications(ListNotificationsRequest {
            user_id: other,
            page_size: 2,
            page_token: token,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_malformed_event_is_dead_lettered_and_the_consumer_keeps_going() {
    let app = spawn_app().await;
    app.publish(UserRegistered {
        user_id: "not-a-uuid".into(),
        email: "x@example.com".into(),
        display_name: "X".into(),
        occurred_at: None,
    })
    .await;
    let user = Uuid::now_v7().to_string();
    app.publish(UserRegistered {
        user_id: user.clone(),
        email: "ada@example.com".into(),
        display_name: "Ada".into(),
        occurred_at: None,
    })
    .await;
    wait_for_count(&app, &user, 1).await;

    let js = app.publisher.jetstream().clone();
    let dead = wait_for(Duration::from_secs(30), || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream("SHOP_DLQ").await.ok()?;
            let messages = stream.info().await.ok()?.state.messages;
            (messages == 1).then_some(messages)
        }
    })
    .await
    .expect("the bad event is in the dead-letter stream");
    assert_eq!(dead, 1);
}

#[tokio::test]
async fn watchers_receive_their_own_new_notifications() {
    let app = spawn_app().await;
    let user = Uuid::now_v7().to_string();
    let someone_else = Uuid::now_v7().to_string();
    let mut stream = app
        .client
        .clone()
        .watch_notifications(WatchNotificationsRequest {
            user_id: user.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    for (id, name) in [(&someone_else, "Other"), (&user, "Ada")] {
        app.publish(UserRegistered {
            user_id: id.clone(),
            email: format!("{name}@example.com"),
            display_name: name.into(),
            occurred_at: None,
        })
        .await;
    }
    let update = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a notification within 30 s")
        .unwrap()
        .unwrap();
    let notification = update.notification.unwrap();
    assert_eq!(notification.user_id, user);
    assert_eq!(notification.title, "Welcome, Ada!");
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let app = spawn_app().await;
    let err = app
        .client
        .clone()
        .list_notifications(ListNotificationsRequest {
            user_id: "nope".into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = app
        .client
        .clone()
        .list_notifications(ListNotificationsRequest {
            user_id: Uuid::now_v7().to_string(),
            page_size: 0,
            page_token: "garbage!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
