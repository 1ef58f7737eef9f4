//! grpc.health.v1 and `/readyz` gate on the database only; while NATS is away the service
//! stays in service and `/readyz` reports NATS down; the outbox gauges are on `/metrics`.

use std::time::Duration;

use shop_proto::shipping::ShipmentStatus;
use shop_testkit::{http_get, wait_until};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

use crate::helpers::{fast, order_confirmed, spawn_app_with};

const SHIPPING: &str = "shop.shipping.v1.ShippingService";

async fn status_of(health: &mut HealthClient<tonic::transport::Channel>) -> Option<ServingStatus> {
    let response = health
        .check(HealthCheckRequest {
            service: SHIPPING.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

#[tokio::test]
async fn a_nats_outage_is_reported_while_shipping_stays_in_service() {
    let mut app = spawn_app_with(fast).await;
    let health = HealthClient::new(app.channel.clone());
    wait_until(Duration::from_secs(20), || {
        let mut health = health.clone();
        async move { status_of(&mut health).await == Some(ServingStatus::Serving) }
    })
    .await
    .expect("SERVING");
    let admin = app.admin_addr;
    let (code, body) = http_get(admin, "/readyz").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let order = Uuid::now_v7();
    app.publish(order_confirmed(order, &[(Uuid::now_v7(), 1)]))
        .await;
    app.wait_for_status(order, ShipmentStatus::Delivered).await;
    let (_, metrics) = http_get(admin, "/metrics").await.unwrap();
    assert!(metrics.contains("shop_outbox_unpublished"), "{metrics}");
    assert!(metrics.contains("shop_outbox_parked"), "{metrics}");

    app.nats.stop().await.unwrap();
    wait_until(Duration::from_secs(20), || async move {
        http_get(admin, "/readyz")
            .await
            .is_ok_and(|(_, body)| body.contains("[-]nats down"))
    })
    .await
    .expect("/readyz names NATS as down");
    assert_eq!(http_get(admin, "/readyz").await.unwrap().0, 200);
    assert_eq!(
        status_of(&mut health.clone()).await,
        Some(ServingStatus::Serving)
    );
    // The database answers: reads still work.
    let shipment = app.shipment_of(order).await.unwrap();
    assert_eq!(shipment.status, ShipmentStatus::Delivered as i32);

    app.nats.restart().await.unwrap();
    wait_until(Duration::from_secs(20), || async move {
        http_get(admin, "/readyz")
            .await
            .is_ok_and(|(_, body)| body.contains("[+]nats ok"))
    })
    .await
    .expect("/readyz sees NATS again");
    app.shutdown().await;
}
