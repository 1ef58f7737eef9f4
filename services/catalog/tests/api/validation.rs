//! Bad input gets INVALID_ARGUMENT or ALREADY_EXISTS naming the field, never INTERNAL.

use shop_proto::{
    catalog::{BatchGetProductsRequest, ListProductsRequest, SearchProductsRequest},
    common::Money,
};
use tonic::Code;

use crate::helpers::{create_request, spawn_app, violated_fields};

#[tokio::test]
async fn create_product_rejects_each_bad_field_by_name() {
    let mut app = spawn_app().await;
    let cases = [
        ("name", {
            let mut r = create_request("X1", "", "misc", 1);
            r.name = String::new();
            r
        }),
        ("name", create_request("X2", "   ", "misc", 1)),
        ("price.units", {
            let mut r = create_request("X3", "Thing", "misc", 1);
            r.price = Some(Money {
                units: -5,
                nanos: 0,
                currency_code: "USD".into(),
            });
            r
        }),
        ("price.currency_code", {
            let mut r = create_request("X4", "Thing", "misc", 1);
            r.price = Some(Money {
                units: 5,
                nanos: 0,
                currency_code: "XYZ".into(),
            });
            r
        }),
        ("price", {
            let mut r = create_request("X5", "Thing", "misc", 1);
            r.price = None;
            r
        }),
        ("sku", create_request("bad sku!", "Thing", "misc", 1)),
    ];
    for (field, request) in cases {
        let err = app.client.create_product(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            violated_fields(&err).iter().any(|f| f == field),
            "expected a violation on {field}, got {:?} ({})",
            violated_fields(&err),
            err.message()
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn duplicate_sku_is_already_exists_on_sku() {
    let mut app = spawn_app().await;
    app.create("DUP", "First", "misc", 1).await;
    let err = app
        .client
        .create_product(create_request("DUP", "Second", "misc", 2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(violated_fields(&err), vec!["sku"]);
    app.shutdown().await;
}

#[tokio::test]
async fn paging_limits_and_tokens_are_checked() {
    let mut app = spawn_app().await;
    let err = app
        .client
        .list_products(ListProductsRequest {
            page_size: 101,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["page_size"]);

    for token in ["not-a-token!", "AAAA", "_w"] {
        let err = app
            .client
            .list_products(ListProductsRequest {
                page_token: token.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "token {token:?}: {err:?}"
        );
        assert_eq!(violated_fields(&err), vec!["page_token"]);
    }

    let err = app
        .client
        .search_products(SearchProductsRequest {
            query: "x".into(),
            page_size: 0,
            page_token: "%%%".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["page_token"]);
    app.shutdown().await;
}

#[tokio::test]
async fn batch_get_rejects_bad_ids_and_oversized_batches() {
    let mut app = spawn_app().await;
    let err = app
        .client
        .batch_get_products(BatchGetProductsRequest {
            product_ids: vec!["not-a-uuid".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(violated_fields(&err)[0].starts_with("product_ids"));

    let too_many = (0..101).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let err = app
        .client
        .batch_get_products(BatchGetProductsRequest {
            product_ids: too_many,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    app.shutdown().await;
}
