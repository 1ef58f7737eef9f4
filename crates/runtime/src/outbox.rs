//! The outbox relay as a service runs it: provision the service's stream, then carry committed
//! outbox rows to JetStream until the service stops.
//!
//! Every service that publishes events runs exactly this beside its gRPC server, so it lives
//! here once; the mechanics (claiming rows, parking poison rows, metrics) are `shop_outbox`'s.

use async_nats::jetstream;
use shop_events::{EventPublisher, StreamSpec};
use shop_outbox::{Relay, RelayMetrics};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::background::retry_until_stopped;

/// Provisions the stream of bounded context `context` (`SHOP_<CONTEXT>`, with `replicas`),
/// then relays the outbox of `pool` until `stop` is cancelled, keeping `metrics` (on the
/// service's `/metrics`) fresh. While NATS is unreachable it retries with backoff; nothing is
/// lost meanwhile, the rows wait in the outbox.
pub async fn relay_outbox(
    context: &'static str,
    js: jetstream::Context,
    pool: PgPool,
    replicas: usize,
    metrics: RelayMetrics,
    stop: CancellationToken,
) {
    let stream = StreamSpec::for_context(context).with_replicas(replicas);
    let what = format!("provision the {context} stream");
    if !retry_until_stopped(&what, &stop, || stream.ensure(&js)).await {
        return;
    }
    let relay = Relay::new(pool, EventPublisher::new(js)).with_metrics(metrics);
    if let Err(err) = relay.run(stop.cancelled_owned()).await {
        tracing::error!(error = %err, context, "outbox relay stopped");
    }
}
