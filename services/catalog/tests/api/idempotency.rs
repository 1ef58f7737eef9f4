//! CreateProduct's idempotency key: a retry gets the first product, concurrent retries too,
//! and a key reused for a different request is refused.

use futures::future::join_all;
use shop_proto::catalog::UpdatePriceRequest;
use tonic::Code;

use crate::helpers::{create_request, spawn_app, usd, violated_fields};

#[tokio::test]
async fn concurrent_identical_creates_with_one_key_all_get_the_same_product() {
    let app = spawn_app().await;
    let mut request = create_request("RACE-1", "Racing kettle", "kitchen", 40);
    request.idempotency_key = "create-racing-kettle".into();
    let calls = (0..8).map(|_| {
        let mut client = app.client.clone();
        let request = request.clone();
        async move { client.create_product(request).await }
    });
    let mut ids = Vec::new();
    for result in join_all(calls).await {
        let product = result
            .expect("every retry of one request succeeds")
            .into_inner()
            .product
            .unwrap();
        ids.push(product.product_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one product for one key: {ids:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_reused_for_a_different_request_is_refused_naming_the_key() {
    let mut app = spawn_app().await;
    let mut first = create_request("K-1", "Kettle", "kitchen", 40);
    first.idempotency_key = "key-1".into();
    let created = app
        .client
        .create_product(first.clone())
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();

    let mut other = create_request("K-2", "Toaster", "kitchen", 30);
    other.idempotency_key = "key-1".into();
    let err = app.client.create_product(other).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(violated_fields(&err), vec!["idempotency_key"]);

    let mut same_sku_other_price = first.clone();
    same_sku_other_price.price = Some(usd(41, 0));
    let err = app
        .client
        .create_product(same_sku_other_price)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // A retry of the first request still gets its product, even after the price moved on.
    app.client
        .update_price(UpdatePriceRequest {
            product_id: created.product_id.clone(),
            price: Some(usd(45, 0)),
            expected_version: 1,
        })
        .await
        .unwrap();
    let again = app
        .client
        .create_product(first)
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(again.product_id, created.product_id);
    app.shutdown().await;
}
