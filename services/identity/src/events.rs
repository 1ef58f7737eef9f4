//! Events identity publishes (`proto/shop/identity/v1/events.proto`), and the outbox relay
//! that carries them from the database to JetStream.

use async_nats::jetstream;
use shop_events::{EventPublisher, StreamSpec};
use shop_outbox::{Relay, RelayMetrics};
use shop_runtime::{CancellationToken, background::retry_until_stopped};
use sqlx::PgPool;

/// Subject of `shop.identity.v1.UserRegistered`.
pub const USER_REGISTERED: &str = "shop.identity.v1.user_registered";

/// Provisions the `SHOP_IDENTITY` stream, then relays the outbox until `stop` is cancelled,
/// keeping `metrics` (on the service's `/metrics`) fresh.
/// While NATS is unreachable it retries with backoff; nothing is lost meanwhile, the rows
/// wait in the outbox.
pub async fn relay(
    js: jetstream::Context,
    pool: PgPool,
    replicas: usize,
    metrics: RelayMetrics,
    stop: CancellationToken,
) {
    let stream = StreamSpec::for_context("identity").with_replicas(replicas);
    let provisioned =
        retry_until_stopped("provision SHOP_IDENTITY", &stop, || stream.ensure(&js)).await;
    if !provisioned {
        return;
    }
    let relay = Relay::new(pool, EventPublisher::new(js)).with_metrics(metrics);
    if let Err(err) = relay.run(stop.cancelled_owned()).await {
        tracing::error!(error = %err, "outbox relay stopped");
    }
}
