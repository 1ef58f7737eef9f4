//! The outbox's parked rows are on identity's `/metrics` (what `meshctl status` reads).

use std::time::Duration;

use identity::App;
use shop_testkit::{Nats, Postgres, http_get, wait_until};
use tokio::sync::oneshot;

use crate::helpers::config;

#[tokio::test]
async fn parked_outbox_rows_are_exported_on_metrics() {
    let postgres = Postgres::start().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let database_url = postgres.fresh_database().await.unwrap();
    let app = App::build(config(&database_url, &nats.url()))
        .await
        .unwrap();
    let admin = app.admin_addr();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let metric = |line: &'static str| async move {
        http_get(admin, "/metrics")
            .await
            .is_ok_and(|(status, body)| status == 200 && body.lines().any(|l| l == line))
    };
    wait_until(Duration::from_secs(30), || metric("shop_outbox_parked 0"))
        .await
        .unwrap();

    // As the relay leaves a row it gave up on (tested in shop-outbox).
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    sqlx::query(
        "INSERT INTO outbox_dead_letters \
         (id, event_id, subject, event_type, headers, payload, created_at, attempts, error) \
         VALUES (1, gen_random_uuid(), 'shop.identity.v1.user_registered', \
         'shop.identity.v1.UserRegistered', '{}', '', now(), 5, 'max payload size exceeded')",
    )
    .execute(&pool)
    .await
    .unwrap();
    // The relay refreshes its gauges every 15 s.
    wait_until(Duration::from_secs(60), || metric("shop_outbox_parked 1"))
        .await
        .unwrap();
}
