//! `GET /admin/state` lists every stock row, every reservation and the outbox, in the shape
//! `meshctl check` reads (`shop_invariants::types::InventoryState`).

use serde_json::Value;
use shop_invariants::types::{InventoryState, ReservationStatus};
use shop_proto::inventory::{CommitRequest, ReleaseRequest};
use shop_testkit::http_get;
use uuid::Uuid;

use crate::helpers::{assert_conserved, spawn_app};

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn admin_state_lists_stock_reservations_and_the_outbox() {
    let mut app = spawn_app().await;
    let (code, body) = http_get(app.admin_addr, "/admin/state").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let empty: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(empty["stock"], Value::Array(vec![]));
    assert_eq!(empty["reservations"], Value::Array(vec![]));

    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    app.stock(a, 10).await;
    app.stock(b, 5).await;
    let held = app.reserve(&[(a, 2), (b, 1)]).await;
    let sold = app.reserve(&[(a, 3)]).await;
    let dropped = app.reserve(&[(b, 4)]).await;
    app.client
        .commit(CommitRequest {
            reservation_id: sold.reservation_id.clone(),
        })
        .await
        .unwrap();
    app.client
        .release(ReleaseRequest {
            reservation_id: dropped.reservation_id.clone(),
            reason: "order cancelled".into(),
        })
        .await
        .unwrap();

    let (code, body) = http_get(app.admin_addr, "/admin/state").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let raw: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(keys(&raw), ["outbox", "reservations", "stock"]);
    assert_eq!(
        keys(&raw["stock"][0]),
        [
            "available",
            "committed",
            "on_hand",
            "product_id",
            "reserved"
        ]
    );
    assert_eq!(
        keys(&raw["reservations"][0]),
        [
            "created_at",
            "lines",
            "order_id",
            "reservation_id",
            "status",
            "updated_at"
        ]
    );
    assert_eq!(
        keys(&raw["reservations"][0]["lines"][0]),
        ["product_id", "quantity"]
    );

    let state: InventoryState = serde_json::from_str(&body).unwrap();
    let counts = |product: Uuid| {
        let row = state
            .stock
            .iter()
            .find(|s| s.product_id == product.to_string())
            .unwrap();
        (row.on_hand, row.available, row.reserved, row.committed)
    };
    assert_eq!(counts(a), (10, 5, 2, 3));
    assert_eq!(counts(b), (5, 4, 1, 0));
    let statuses: Vec<_> = state
        .reservations
        .iter()
        .map(|r| (r.reservation_id.as_str(), r.order_id.as_str(), r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            (
                held.reservation_id.as_str(),
                held.order_id.as_str(),
                ReservationStatus::Reserved
            ),
            (
                sold.reservation_id.as_str(),
                sold.order_id.as_str(),
                ReservationStatus::Committed
            ),
            (
                dropped.reservation_id.as_str(),
                dropped.order_id.as_str(),
                ReservationStatus::Released
            ),
        ]
    );
    let mut lines: Vec<_> = state.reservations[0]
        .lines
        .iter()
        .map(|l| (l.product_id.clone(), l.quantity))
        .collect();
    lines.sort_unstable();
    let mut expected = vec![(a.to_string(), 2), (b.to_string(), 1)];
    expected.sort_unstable();
    assert_eq!(lines, expected);
    assert_eq!(state.outbox.parked, 0);
    assert_eq!(
        state.outbox.unpublished > 0,
        state.outbox.oldest_unpublished_at.is_some()
    );
    assert_conserved(&app.db).await;
    app.shutdown().await;
}
