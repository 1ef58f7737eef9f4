//! UpdatePrice publishes ProductPriceChanged through the outbox: the event commits with the
//! new price (a refused update writes neither) and reaches JetStream.

use std::time::Duration;

use prost::Message as _;
use shop_proto::catalog::{ProductPriceChanged, UpdatePriceRequest};
use shop_testkit::wait_for;
use tonic::Code;

use crate::helpers::{spawn_app, usd};

#[tokio::test]
async fn price_change_reaches_jetstream_and_a_stale_one_writes_no_event() {
    let mut app = spawn_app().await;
    let product = app.create("P-EV", "Pan", "kitchen", 30).await;
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
    let stale = app
        .client
        .update_price(UpdatePriceRequest {
            product_id: product.product_id.clone(),
            price: Some(usd(1, 0)),
            expected_version: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);

    let db = sqlx::PgPool::connect(&app.database_url).await.unwrap();
    let outboxed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'shop.catalog.v1.ProductPriceChanged'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(outboxed, 1, "one event for the one change that committed");

    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let event = wait_for(Duration::from_secs(30), || {
        let js = js.clone();
        async move {
            let stream = js.get_stream(catalog::events::STREAM).await.ok()?;
            let message = stream
                .get_last_raw_message_by_subject(catalog::events::PRODUCT_PRICE_CHANGED)
                .await
                .ok()?;
            ProductPriceChanged::decode(message.payload).ok()
        }
    })
    .await
    .expect("ProductPriceChanged reaches JetStream");
    assert_eq!(event.product_id, product.product_id);
    assert_eq!(event.sku, "P-EV");
    assert_eq!(event.old_price, Some(usd(30, 500_000_000)));
    assert_eq!(event.new_price, Some(usd(25, 0)));
    assert_eq!(event.version, 2);
    assert_eq!(event.occurred_at, updated.updated_at);
    app.shutdown().await;
}
