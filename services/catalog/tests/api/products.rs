//! The catalog's RPCs doing their jobs.

use shop_proto::catalog::{
    BatchGetProductsRequest, GetProductRequest, ListProductsRequest, SearchProductsRequest,
    UpdatePriceRequest,
};
use tonic::Code;

use crate::helpers::{create_request, spawn_app, usd, violated_fields};

#[tokio::test]
async fn created_product_reads_back() {
    let mut app = spawn_app().await;
    let created = app.create("SKU-1", "Trail shoe", "shoes", 89).await;
    assert_eq!(created.version, 1);
    let read = app
        .client
        .get_product(GetProductRequest {
            product_id: created.product_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(read, created);
    assert_eq!(read.price, Some(usd(89, 500_000_000)));
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_product_is_not_found() {
    let mut app = spawn_app().await;
    let err = app
        .client
        .get_product(GetProductRequest {
            product_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.shutdown().await;
}

#[tokio::test]
async fn batch_get_keeps_request_order_and_lists_missing_ids() {
    let mut app = spawn_app().await;
    let a = app.create("A", "Alpha", "misc", 1).await;
    let b = app.create("B", "Beta", "misc", 2).await;
    let missing = uuid::Uuid::now_v7().to_string();
    let response = app
        .client
        .batch_get_products(BatchGetProductsRequest {
            product_ids: vec![b.product_id.clone(), missing.clone(), a.product_id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = response
        .products
        .iter()
        .map(|p| p.product_id.clone())
        .collect();
    assert_eq!(ids, vec![b.product_id, a.product_id]);
    assert_eq!(response.not_found_product_ids, vec![missing]);
    app.shutdown().await;
}

#[tokio::test]
async fn list_pages_through_everything_once_with_opaque_tokens() {
    let mut app = spawn_app().await;
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(
            app.create(&format!("S{i}"), &format!("Shirt {i}"), "shirts", 10)
                .await
                .product_id,
        );
    }
    app.create("H1", "Hat", "hats", 5).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .client
            .list_products(ListProductsRequest {
                page_size: 2,
                page_token: token.clone(),
                category: "shirts".into(),
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.products.into_iter().map(|p| p.product_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);

    // A token is bound to the filter it was issued for.
    let first = app
        .client
        .list_products(ListProductsRequest {
            page_size: 2,
            page_token: String::new(),
            category: "shirts".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let err = app
        .client
        .list_products(ListProductsRequest {
            page_size: 2,
            page_token: first.next_page_token,
            category: "hats".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["page_token"]);
    app.shutdown().await;
}

#[tokio::test]
async fn search_finds_by_words_in_name_and_description() {
    let mut app = spawn_app().await;
    let shoe = app.create("T1", "Trail running shoe", "shoes", 90).await;
    app.create("T2", "Wool hat", "hats", 20).await;
    let found = app
        .client
        .search_products(SearchProductsRequest {
            query: "running".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = found.products.into_iter().map(|p| p.product_id).collect();
    assert_eq!(ids, vec![shoe.product_id]);
    app.shutdown().await;
}

#[tokio::test]
async fn update_price_bumps_version_and_refuses_stale_writes() {
    let mut app = spawn_app().await;
    let product = app.create("P1", "Pan", "kitchen", 30).await;
    let updated = app
        .client
        .update_price(UpdatePriceRequest {
            product_id: product.product_id.clone(),
            price: Some(usd(25, 0)),
            expected_version: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.price, Some(usd(25, 0)));

    let stale = app
        .client
        .update_price(UpdatePriceRequest {
            product_id: product.product_id,
            price: Some(usd(20, 0)),
            expected_version: 1,
        })
        .await
        .unwrap_err();
    // The contract: ABORTED when the version moved on (re-read and retry).
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(violated_fields(&stale), vec!["expected_version"]);
    app.shutdown().await;
}

#[tokio::test]
async fn create_with_the_same_idempotency_key_returns_the_first_product() {
    let mut app = spawn_app().await;
    let mut request = create_request("K1", "Kettle", "kitchen", 40);
    request.idempotency_key = "create-kettle-1".into();
    let first = app
        .client
        .create_product(request.clone())
        .await
        .unwrap()
        .into_inner();
    let again = app
        .client
        .create_product(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.product, again.product);
    app.shutdown().await;
}
