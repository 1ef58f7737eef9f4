//! grpc.health.v1 and `/readyz` gate on the database only; while NATS is away the service stays
//! in service, `/readyz` reports NATS down, and reservations' events wait in the outbox.

use std::time::Duration;

use shop_proto::inventory::StockReserved;
use shop_testkit::{http_get, wait_until};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

use crate::helpers::{assert_conserved, spawn_app};

const INVENTORY: &str = "shop.inventory.v1.InventoryService";

async fn status_of(health: &mut HealthClient<tonic::transport::Channel>) -> Option<ServingStatus> {
    let response = health
        .check(HealthCheckRequest {
            service: INVENTORY.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

async fn wait_for_status(
    health: &HealthClient<tonic::transport::Channel>,
    want: ServingStatus,
) -> bool {
    wait_until(Duration::from_secs(20), || {
        let mut health = health.clone();
        async move { status_of(&mut health).await == Some(want) }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_nats_outage_is_reported_while_reservations_go_on_and_their_events_wait() {
    let mut app = spawn_app().await;
    let health = HealthClient::new(app.channel.clone());
    assert!(wait_for_status(&health, ServingStatus::Serving).await);
    assert_eq!(http_get(app.admin_addr, "/readyz").await.unwrap().0, 200);

    app.nats.stop().await.unwrap();
    let admin = app.admin_addr;
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
    let product = Uuid::new_v4();
    app.stock(product, 5).await;
    let reservation = app.reserve(&[(product, 2)]).await;

    app.nats.restart().await.unwrap();
    wait_until(Duration::from_secs(20), || async move {
        http_get(admin, "/readyz")
            .await
            .is_ok_and(|(_, body)| body.contains("[+]nats ok"))
    })
    .await
    .expect("/readyz sees NATS again");
    let events: Vec<StockReserved> = app.published(inventory::events::STOCK_RESERVED).await;
    let ids: Vec<_> = events.iter().map(|e| e.reservation_id.clone()).collect();
    assert_eq!(ids, vec![reservation.reservation_id]);
    assert_conserved(&app.db).await;
    app.shutdown().await;
}
