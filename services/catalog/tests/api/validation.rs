//! Bad input gets INVALID_ARGUMENT or ALREADY_EXISTS naming the field, never INTERNAL.

use shop_proto::{
    catalog::{
        BatchGetProductsRequest, GetProductRequest, ListProductsRequest, SearchProductsRequest,
    },
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

#[tokio::test]
async fn a_nul_in_a_string_is_invalid_argument_on_that_field() {
    let mut app = spawn_app().await;
    let err = app
        .client
        .list_products(ListProductsRequest {
            category: "\u{0}x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(violated_fields(&err), vec!["category"]);

    let err = app
        .client
        .search_products(SearchProductsRequest {
            query: "lamp\u{0}".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(violated_fields(&err), vec!["query"]);

    let mut request = create_request("NUL-1", "Thing", "misc", 1);
    request.description = "two\u{0}lines".into();
    let err = app.client.create_product(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(violated_fields(&err), vec!["description"]);

    // A NUL also fails a uuid, but it must never reach the database whatever the rules say.
    let err = app
        .client
        .get_product(GetProductRequest {
            product_id: "\u{0}".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(violated_fields(&err).iter().all(|f| f == "product_id"));
    app.shutdown().await;
}

/// The bytes `status` takes as response metadata (`grpc-message`, percent-encoded, and
/// `grpc-status-details-bin`, base64), which grpcio and grpc-go cap at 8 KiB.
fn status_bytes(status: &tonic::Status) -> usize {
    status
        .clone()
        .into_http::<tonic::body::Body>()
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// `n` ids: every third malformed, every third the same uuid, the rest distinct.
fn messy_ids(n: usize) -> Vec<String> {
    let repeated = uuid::Uuid::new_v4().to_string();
    (0..n)
        .map(|i| match i % 3 {
            0 => format!("not-a-uuid-{i}"),
            1 => repeated.clone(),
            _ => uuid::Uuid::new_v4().to_string(),
        })
        .collect()
}

#[tokio::test]
async fn huge_messy_batches_get_a_small_invalid_argument() {
    let mut app = spawn_app().await;
    for n in [100, 101, 1_000, 100_000] {
        let call = app.client.batch_get_products(BatchGetProductsRequest {
            product_ids: messy_ids(n),
        });
        let err = tokio::time::timeout(std::time::Duration::from_secs(60), call)
            .await
            .expect("validation answers")
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{n} ids: {}",
            err.message()
        );
        let fields = violated_fields(&err);
        assert!(
            !fields.is_empty() && fields.iter().all(|f| f.starts_with("product_ids")),
            "{n} ids: {fields:?}"
        );
        assert!(
            status_bytes(&err) < 6 * 1024,
            "{n} ids: a status of {} bytes",
            status_bytes(&err)
        );
        if n > 100 {
            // Over max_items the count is the whole story.
            assert_eq!(fields, vec!["product_ids"], "{n} ids");
        } else {
            assert!(
                err.message().contains("violations, the first"),
                "{}",
                err.message()
            );
        }
    }
    app.shutdown().await;
}
