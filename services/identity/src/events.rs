//! Events identity publishes (`proto/shop/identity/v1/events.proto`), and the outbox relay
//! that carries them from the database to JetStream.

use std::time::Duration;

use async_nats::jetstream;
use shop_events::{EventPublisher, StreamSpec};
use shop_outbox::Relay;
use shop_runtime::CancellationToken;
use sqlx::PgPool;

/// Subject of `shop.identity.v1.UserRegistered`.
pub const USER_REGISTERED: &str = "shop.identity.v1.user_registered";

/// Provisions the `SHOP_IDENTITY` stream, then relays the outbox until `stop` is cancelled.
/// While NATS is unreachable it retries with backoff; nothing is lost meanwhile, the rows
/// wait in the outbox.
pub async fn relay(js: jetstream::Context, pool: PgPool, replicas: usize, stop: CancellationToken) {
    let stream = StreamSpec::for_context("identity").with_replicas(replicas);
    let mut delay = Duration::from_millis(200);
    loop {
        match stream.ensure(&js).await {
            Ok(()) => break,
            Err(err) => {
                tracing::warn!(error = %err, ?delay, "cannot provision SHOP_IDENTITY yet; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    let relay = Relay::new(pool, EventPublisher::new(js));
    if let Err(err) = relay.run(stop.cancelled_owned()).await {
        tracing::error!(error = %err, "outbox relay stopped");
    }
}
