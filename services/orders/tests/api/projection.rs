//! CQRS: the read model is the fold of the events; rebuilding it from scratch gives the live
//! one back, and repairs a row that drifted.

use std::time::Duration;

use shop_proto::orders::{CancelOrderRequest, OrderStatus};

use crate::helpers::Mesh;

#[tokio::test]
async fn rebuilding_the_read_model_gives_the_live_one_and_repairs_drift() {
    let mut mesh = Mesh::start().await;
    let mug = mesh.product(7, 0, 3).await;
    let delivered = mesh.place(&[(&mug, 1)], "tok_visa").await.order_id;
    let declined = mesh.place(&[(&mug, 1)], "tok_decline").await.order_id;
    let short = mesh.place(&[(&mug, 5)], "tok_visa").await.order_id;
    // Slow answers: the customer cancels while the saga is still running.
    mesh.set_behavior(Duration::from_millis(300), 0.0, false)
        .await;
    let pending = mesh.place(&[(&mug, 1)], "tok_visa").await.order_id;
    mesh.orders()
        .cancel_order(CancelOrderRequest {
            order_id: pending.clone(),
            reason: "too slow".into(),
        })
        .await
        .expect("cancel");
    mesh.set_behavior(Duration::ZERO, 0.0, false).await;
    let within = Duration::from_secs(30);
    mesh.wait_status(&delivered, OrderStatus::Delivered, within)
        .await;
    mesh.wait_status(&declined, OrderStatus::Cancelled, within)
        .await;
    mesh.wait_status(&short, OrderStatus::Cancelled, within)
        .await;
    let live = snapshot(&mesh).await;
    assert_eq!(live.len(), 4);

    let report = orders::rebuild_read_model(&mesh.orders_pool)
        .await
        .expect("rebuild");
    assert_eq!((report.orders, report.repaired, report.removed), (4, 0, 0));
    assert!(report.events >= 10, "{report:?}");
    assert_eq!(
        snapshot(&mesh).await,
        live,
        "the rebuilt read model equals the live one"
    );

    // Drift: a row edited by hand, and a row with no events behind it.
    sqlx::query(
        "UPDATE orders SET status = 'PENDING', body = jsonb_set(body, '{status}', '\"PENDING\"') \
         WHERE order_id = $1::uuid",
    )
    .bind(&delivered)
    .execute(&mesh.orders_pool)
    .await
    .expect("drift");
    sqlx::query(
        "INSERT INTO orders (order_id, customer_id, status, version, created_at, updated_at, body) \
         SELECT gen_random_uuid(), customer_id, status, version, created_at, updated_at, body \
         FROM orders WHERE order_id = $1::uuid",
    )
    .bind(&declined)
    .execute(&mesh.orders_pool)
    .await
    .expect("orphan");
    assert_eq!(
        mesh.get(&delivered).await.status,
        OrderStatus::Pending as i32
    );

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_orders-projection"))
        .arg("rebuild")
        .env("DATABASE_URL", &mesh.orders_db)
        .output()
        .await
        .expect("orders-projection runs");
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(report["orders"], 4);
    assert_eq!(report["repaired"], 1);
    assert_eq!(report["removed"], 1);
    assert_eq!(
        snapshot(&mesh).await,
        live,
        "repaired to the fold of the events"
    );
    mesh.finish().await;
}

async fn snapshot(mesh: &Mesh) -> Vec<(String, String, i64, String)> {
    sqlx::query_as(
        "SELECT order_id::text, status, version, body::text FROM orders ORDER BY order_id",
    )
    .fetch_all(&mesh.orders_pool)
    .await
    .expect("read model")
}
