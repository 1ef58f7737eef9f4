//! `GET /admin/state` lists every shipment and the outbox, in the shape `meshctl check` reads.

use serde_json::Value;
use shop_proto::shipping::ShipmentStatus;
use shop_testkit::http_get;
use uuid::Uuid;

use crate::helpers::{fast, order_confirmed, spawn_app_with};

#[tokio::test]
async fn admin_state_lists_shipments_and_the_outbox() {
    let app = spawn_app_with(fast).await;
    let (code, body) = http_get(app.admin_addr, "/admin/state").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let empty: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(empty["shipments"], Value::Array(vec![]));

    let order = Uuid::now_v7();
    app.publish(order_confirmed(order, &[(Uuid::now_v7(), 1)]))
        .await;
    let shipment = app.wait_for_status(order, ShipmentStatus::Delivered).await;
    // Wait for the relay, so the outbox is empty when read.
    let _: Vec<shop_proto::shipping::ShipmentDelivered> =
        app.published(shipping::events::SHIPMENT_DELIVERED).await;

    let (code, body) = http_get(app.admin_addr, "/admin/state").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let state: Value = serde_json::from_str(&body).unwrap();
    let shipments = state["shipments"].as_array().unwrap();
    assert_eq!(shipments.len(), 1, "{body}");
    let row = shipments[0].as_object().unwrap();
    let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "order_id",
            "shipment_id",
            "status",
            "updated_at"
        ]
    );
    assert_eq!(row["shipment_id"], shipment.shipment_id.as_str());
    assert_eq!(row["order_id"], order.to_string().as_str());
    assert_eq!(row["status"], "DELIVERED");
    for at in ["created_at", "updated_at"] {
        let text = row[at].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{at}: {text}"
        );
    }
    assert_eq!(state["outbox"]["unpublished"], 0);
    assert_eq!(state["outbox"]["parked"], 0);
    app.shutdown().await;
}
