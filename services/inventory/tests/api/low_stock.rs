//! LowStock: once per crossing of the threshold going down, not on every change below it.

use shop_proto::inventory::{LowStock, ReleaseRequest};
use uuid::Uuid;

use crate::helpers::{assert_conserved, spawn_app_with};

#[tokio::test]
async fn low_stock_is_published_once_per_crossing() {
    let mut app = spawn_app_with(|config| config.stock.low_stock_threshold = 5).await;
    let product = Uuid::new_v4();
    let other = Uuid::new_v4();
    app.stock(product, 3).await; // 0 -> 3: rising, never above the threshold: no crossing
    app.stock(product, 7).await; // 3 -> 10
    app.stock(other, 100).await;
    app.reserve(&[(product, 5), (other, 1)]).await; // 10 -> 5: crossing 1
    let small = app.reserve(&[(product, 1)]).await; // 5 -> 4: still low
    app.client
        .release(ReleaseRequest {
            reservation_id: small.reservation_id,
            reason: "cancelled".into(),
        })
        .await
        .unwrap(); // 4 -> 5: still low
    app.stock(product, 10).await; // 5 -> 15: back above
    app.reserve(&[(product, 12)]).await; // 15 -> 3: crossing 2
    app.stock(product, 10).await; // 3 -> 13
    app.stock(product, -8).await; // 13 -> 5: crossing 3, by an adjustment

    let events: Vec<LowStock> = app.published(inventory::events::LOW_STOCK).await;
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.product_id.clone(), e.available, e.threshold))
        .collect();
    let p = product.to_string();
    assert_eq!(seen, vec![(p.clone(), 5, 5), (p.clone(), 3, 5), (p, 5, 5)]);
    assert_conserved(&app.db).await;
    app.shutdown().await;
}
