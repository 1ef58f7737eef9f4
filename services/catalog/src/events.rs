//! Events the catalog publishes (`proto/shop/catalog/v1/events.proto`), and the outbox relay
//! that carries them from the database to JetStream.

use async_nats::jetstream;
use shop_events::{EventPublisher, StreamSpec};
use shop_outbox::{Relay, RelayMetrics};
use shop_runtime::{CancellationToken, background::retry_until_stopped};
use sqlx::PgPool;

/// Subject of `shop.catalog.v1.ProductPriceChanged`.
pub const PRODUCT_PRICE_CHANGED: &str = "shop.catalog.v1.product_price_changed";

/// Name of the catalog's stream.
pub const STREAM: &str = "SHOP_CATALOG";

/// Provisions the `SHOP_CATALOG` stream, then relays the outbox until `stop` is cancelled.
/// While NATS is unreachable it retries with backoff; the rows wait in the outbox meanwhile.
pub async fn relay(
    js: jetstream::Context,
    pool: PgPool,
    replicas: usize,
    metrics: RelayMetrics,
    stop: CancellationToken,
) {
    let stream = StreamSpec::for_context("catalog").with_replicas(replicas);
    let provisioned =
        retry_until_stopped("provision SHOP_CATALOG", &stop, || stream.ensure(&js)).await;
    if !provisioned {
        return;
    }
    let relay = Relay::new(pool, EventPublisher::new(js)).with_metrics(metrics);
    if let Err(err) = relay.run(stop.cancelled_owned()).await {
        tracing::error!(error = %err, "outbox relay stopped");
    }
}
