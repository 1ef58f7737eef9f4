//! Events payments publishes (`proto/shop/payments/v1/events.proto`), and the outbox relay
//! that carries them from the database to JetStream.

use async_nats::jetstream;
use shop_events::{EventPublisher, StreamSpec};
use shop_outbox::{Relay, RelayMetrics};
use shop_runtime::{CancellationToken, background::retry_until_stopped};
use sqlx::PgPool;

/// Subject of `shop.payments.v1.PaymentAuthorized`.
pub const PAYMENT_AUTHORIZED: &str = "shop.payments.v1.payment_authorized";
/// Subject of `shop.payments.v1.PaymentCaptured`.
pub const PAYMENT_CAPTURED: &str = "shop.payments.v1.payment_captured";
/// Subject of `shop.payments.v1.PaymentRefunded`.
pub const PAYMENT_REFUNDED: &str = "shop.payments.v1.payment_refunded";
/// Subject of `shop.payments.v1.PaymentVoided`.
pub const PAYMENT_VOIDED: &str = "shop.payments.v1.payment_voided";

/// Provisions the `SHOP_PAYMENTS` stream, then relays the outbox until `stop` is cancelled.
/// While NATS is unreachable it retries with backoff; the rows wait in the outbox.
pub async fn relay(
    js: jetstream::Context,
    pool: PgPool,
    replicas: usize,
    metrics: RelayMetrics,
    stop: CancellationToken,
) {
    let stream = StreamSpec::for_context("payments").with_replicas(replicas);
    let provisioned =
        retry_until_stopped("provision SHOP_PAYMENTS", &stop, || stream.ensure(&js)).await;
    if !provisioned {
        return;
    }
    let relay = Relay::new(pool, EventPublisher::new(js)).with_metrics(metrics);
    if let Err(err) = relay.run(stop.cancelled_owned()).await {
        tracing::error!(error = %err, "outbox relay stopped");
    }
}
