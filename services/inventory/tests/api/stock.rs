//! GetStock, BatchGetStock and AdjustStock: levels, order, zeros, the floor of held stock.

use shop_proto::inventory::{AdjustStockRequest, BatchGetStockRequest};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{assert_conserved, spawn_app, violated_fields};

#[tokio::test]
async fn a_product_never_stocked_reads_as_zeros() {
    let mut app = spawn_app().await;
    let product = Uuid::new_v4();
    let stock = app.get_stock(product).await;
    assert_eq!(stock.product_id, product.to_string());
    assert_eq!(
        (
            stock.on_hand,
            stock.available,
            stock.reserved,
            stock.committed
        ),
        (0, 0, 0, 0)
    );
    assert!(stock.updated_at.is_none());
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

#[tokio::test]
async fn batch_get_answers_in_request_order_with_zeros_for_the_unknown() {
    let mut app = spawn_app().await;
    let (a, b, unknown) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    app.stock(a, 3).await;
    app.stock(b, 7).await;
    let stocks = app
        .client
        .batch_get_stock(BatchGetStockRequest {
            product_ids: vec![b.to_string(), unknown.to_string(), a.to_string()],
        })
        .await
        .unwrap()
        .into_inner()
        .stocks;
    let got: Vec<_> = stocks
        .iter()
        .map(|s| (s.product_id.clone(), s.available))
        .collect();
    assert_eq!(
        got,
        vec![
            (b.to_string(), 7),
            (unknown.to_string(), 0),
            (a.to_string(), 3)
        ]
    );
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

#[tokio::test]
async fn adjustments_add_and_remove_on_hand_and_available() {
    let mut app = spawn_app().await;
    let product = Uuid::new_v4();
    app.stock(product, 10).await;
    let after = app.stock(product, -4).await;
    assert_eq!((after.on_hand, after.available), (6, 6));
    assert!(after.updated_at.is_some());
    assert_eq!(app.get_stock(product).await, after);
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

#[tokio::test]
async fn stock_never_goes_below_what_is_reserved_and_committed() {
    let mut app = spawn_app().await;
    let product = Uuid::new_v4();
    app.stock(product, 10).await;
    let committed = app.reserve(&[(product, 2)]).await;
    app.client
        .commit(shop_proto::inventory::CommitRequest {
            reservation_id: committed.reservation_id,
        })
        .await
        .unwrap();
    app.reserve(&[(product, 4)]).await;
    // 10 on hand, 4 reserved, 2 committed: 4 available.
    let err = app
        .client
        .adjust_stock(AdjustStockRequest {
            product_id: product.to_string(),
            delta: -5,
            reason: "damaged".into(),
            idempotency_key: "too-many".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(violated_fields(&err), vec!["delta"]);
    let after = app.stock(product, -4).await;
    assert_eq!(
        (
            after.on_hand,
            after.available,
            after.reserved,
            after.committed
        ),
        (6, 0, 4, 2)
    );
    // Removing from a product never stocked is refused the same way and leaves no row.
    let err = app
        .client
        .adjust_stock(AdjustStockRequest {
            product_id: Uuid::new_v4().to_string(),
            delta: -1,
            reason: "stocktake".into(),
            idempotency_key: "nothing-there".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM stock")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert_conserved(&app.db).await;
    app.shutdown().await;
}
