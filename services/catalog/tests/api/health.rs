//! grpc.health.v1 and the admin port follow the database.

use std::time::Duration;

use shop_testkit::{http_get, wait_until};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::spawn_app;

const CATALOG: &str = "shop.catalog.v1.CatalogService";

async fn status_of(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Option<ServingStatus> {
    let response = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

#[tokio::test]
async fn health_turns_not_serving_without_the_database_and_back() {
    let mut app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", CATALOG] {
        assert_eq!(
            status_of(&mut health, service).await,
            Some(ServingStatus::Serving)
        );
    }
    assert_eq!(http_get(app.admin_addr, "/readyz").await.unwrap().0, 200);

    app.postgres.stop().await.unwrap();
    wait_until(Duration::from_secs(15), || {
        let mut health = health.clone();
        async move { status_of(&mut health, CATALOG).await == Some(ServingStatus::NotServing) }
    })
    .await
    .expect("NOT_SERVING once the database is gone");
    assert_eq!(
        status_of(&mut health, "").await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(http_get(app.admin_addr, "/readyz").await.unwrap().0, 503);
    assert_eq!(http_get(app.admin_addr, "/livez").await.unwrap().0, 200);

    app.postgres.restart().await.unwrap();
    wait_until(Duration::from_secs(30), || {
        let mut health = health.clone();
        async move { status_of(&mut health, CATALOG).await == Some(ServingStatus::Serving) }
    })
    .await
    .expect("SERVING again once the database is back");
    // And calls work again through the recovered pool.
    app.create("AFTER", "Back again", "misc", 1).await;
    app.shutdown().await;
}

#[tokio::test]
async fn admin_port_serves_metrics_of_calls() {
    let mut app = spawn_app().await;
    app.create("M1", "Metered", "misc", 1).await;
    let (status, body) = http_get(app.admin_addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"shop_grpc_server_handled_total{grpc_service="shop.catalog.v1.CatalogService",grpc_method="CreateProduct",grpc_code="Ok"} 1"#),
        "metrics were:\n{body}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let mut app = spawn_app().await;
    let mut request = tonic::Request::new(shop_proto::catalog::ListProductsRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "req-123".parse().unwrap());
    let response = app.client.list_products(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "req-123");
    let response = app
        .client
        .list_products(shop_proto::catalog::ListProductsRequest::default())
        .await
        .unwrap();
    assert!(response.metadata().get("x-request-id").is_some());
    app.shutdown().await;
}
