//! Bad input gets INVALID_ARGUMENT (or FAILED_PRECONDITION for what only stock can tell)
//! naming the field, never INTERNAL, and writes nothing.

use shop_proto::inventory::{
    AdjustStockRequest, BatchGetStockRequest, CommitRequest, GetStockRequest, ReleaseRequest,
    ReserveRequest, StockLine,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_conserved, reserve_request, spawn_app, violated_fields};

fn assert_names(err: &tonic::Status, code: Code, field: &str, case: &str) {
    assert_eq!(err.code(), code, "{case}: {err:?}");
    assert!(
        violated_fields(err).iter().any(|f| f == field),
        "{case}: expected a violation on {field}, got {:?} ({})",
        violated_fields(err),
        err.message()
    );
}

async fn nothing_reserved(app: &TestApp) {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a refused Reserve left a reservation behind");
}

#[tokio::test]
async fn reserve_rejects_each_bad_field_by_name() {
    let mut app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    app.stock(a, 10).await;
    app.stock(b, 10).await;
    let id = Uuid::new_v4();
    let order = Uuid::new_v4();
    let with_lines = |lines: &[(Uuid, i32)]| reserve_request(id, order, lines);
    let many: Vec<(Uuid, i32)> = (0..101).map(|_| (Uuid::new_v4(), 1)).collect();
    let cases = [
        ("zero quantity", "lines[0].quantity", with_lines(&[(a, 0)])),
        (
            "negative quantity",
            "lines[1].quantity",
            with_lines(&[(a, 1), (b, -2)]),
        ),
        (
            "huge quantity",
            "lines[0].quantity",
            with_lines(&[(a, 10_001)]),
        ),
        ("no lines", "lines", with_lines(&[])),
        ("too many lines", "lines", with_lines(&many)),
        (
            "duplicate product",
            "lines[2].product_id",
            with_lines(&[(a, 1), (b, 1), (a, 2)]),
        ),
        (
            "malformed reservation id",
            "reservation_id",
            ReserveRequest {
                reservation_id: "res-1".into(),
                ..with_lines(&[(a, 1)])
            },
        ),
        (
            "malformed order id",
            "order_id",
            ReserveRequest {
                order_id: String::new(),
                ..with_lines(&[(a, 1)])
            },
        ),
        (
            "malformed product id",
            "lines[0].product_id",
            ReserveRequest {
                lines: vec![StockLine {
                    product_id: "mug".into(),
                    quantity: 1,
                }],
                ..with_lines(&[])
            },
        ),
    ];
    for (case, field, request) in cases {
        let err = app.client.reserve(request).await.unwrap_err();
        assert_names(&err, Code::InvalidArgument, field, case);
    }
    nothing_reserved(&app).await;
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

#[tokio::test]
async fn reserve_names_every_line_stock_cannot_cover_and_holds_none() {
    let mut app = spawn_app().await;
    let (a, b, unknown) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    app.stock(a, 10).await;
    app.stock(b, 2).await;
    let err = app
        .client
        .reserve(reserve_request(
            Uuid::new_v4(),
            Uuid::new_v4(),
            &[(a, 5), (b, 3), (unknown, 1)],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        violated_fields(&err),
        vec!["lines[1].quantity", "lines[2].product_id"]
    );
    assert!(err.message().contains(&b.to_string()), "{err:?}");
    assert!(err.message().contains(&unknown.to_string()), "{err:?}");
    assert_eq!(app.get_stock(a).await.reserved, 0, "all or nothing");
    nothing_reserved(&app).await;
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_other_calls_reject_each_bad_field_by_name() {
    let mut app = spawn_app().await;
    let product = Uuid::new_v4().to_string();
    let adjust = |delta: i64, reason: &str, key: &str| AdjustStockRequest {
        product_id: product.clone(),
        delta,
        reason: reason.into(),
        idempotency_key: key.into(),
    };
    for (case, field, request) in [
        ("zero delta", "delta", adjust(0, "stocktake", "k1")),
        (
            "huge delta",
            "delta",
            adjust(2_000_000_000, "stocktake", "k2"),
        ),
        ("no reason", "reason", adjust(1, "", "k3")),
        ("no key", "idempotency_key", adjust(1, "stocktake", "")),
        (
            "long key",
            "idempotency_key",
            adjust(1, "stocktake", &"k".repeat(129)),
        ),
        (
            "bad product",
            "product_id",
            AdjustStockRequest {
                product_id: "mug".into(),
                ..adjust(1, "stocktake", "k4")
            },
        ),
    ] {
        let err = app.client.adjust_stock(request).await.unwrap_err();
        assert_names(&err, Code::InvalidArgument, field, case);
    }
    let err = app
        .client
        .get_stock(GetStockRequest {
            product_id: "42".into(),
        })
        .await
        .unwrap_err();
    assert_names(&err, Code::InvalidArgument, "product_id", "get_stock");
    for (case, ids) in [
        ("empty", vec![]),
        ("duplicates", vec![product.clone(), product.clone()]),
        (
            "too many",
            (0..101).map(|_| Uuid::new_v4().to_string()).collect(),
        ),
    ] {
        let err = app
            .client
            .batch_get_stock(BatchGetStockRequest { product_ids: ids })
            .await
            .unwrap_err();
        assert_names(&err, Code::InvalidArgument, "product_ids", case);
    }
    let err = app
        .client
        .batch_get_stock(BatchGetStockRequest {
            product_ids: vec![product.clone(), "nope".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        violated_fields(&err)
            .iter()
            .any(|f| f.starts_with("product_ids")),
        "{err:?}"
    );
    let err = app
        .client
        .release(ReleaseRequest {
            reservation_id: "r1".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_names(&err, Code::InvalidArgument, "reservation_id", "release id");
    let err = app
        .client
        .release(ReleaseRequest {
            reservation_id: Uuid::new_v4().to_string(),
            reason: "x".repeat(201),
        })
        .await
        .unwrap_err();
    assert_names(&err, Code::InvalidArgument, "reason", "release reason");
    let err = app
        .client
        .commit(CommitRequest {
            reservation_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_names(&err, Code::InvalidArgument, "reservation_id", "commit id");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM stock")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a refused adjustment left a row behind");
    assert_conserved(&app.db).await;
    app.shutdown().await;
}
