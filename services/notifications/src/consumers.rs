//! The durable consumers: one per source stream, each applying events through its own inbox
//! (scoped by the durable name) so a redelivered event is acked without a second notification.

use std::sync::Arc;

use async_nats::jetstream;
use shop_events::{
    ConsumerRunner, ConsumerSpec, Delivery, HandlerError, Handlers, Inbox, StreamSpec, subject_for,
};
use shop_proto::{
    identity::UserRegistered,
    orders::{OrderCancelled, OrderConfirmed},
    shipping::ShipmentScheduled,
};
use shop_runtime::{CancellationToken, background::retry_until_stopped};
use sqlx::PgPool;

use crate::{
    domain::{self, MalformedEvent, NewNotification},
    store,
};

/// Everything a handler needs, shared by all of them.
#[derive(Clone)]
struct Context {
    pool: PgPool,
    inbox: Arc<Inbox>,
}

impl Context {
    async fn apply(
        &self,
        new: Result<NewNotification, MalformedEvent>,
    ) -> Result<(), HandlerError> {
        let new = new.map_err(HandlerError::permanent)?;
        let mut tx = self.pool.begin().await.map_err(HandlerError::transient)?;
        if !self
            .inbox
            .claim(&mut tx, new.source_event_id)
            .await
            .map_err(HandlerError::transient)?
        {
            tracing::debug!(event_id = %new.source_event_id, "event applied before; acking");
            return Ok(());
        }
        store::insert(&mut tx, &new)
            .await
            .map_err(HandlerError::transient)?;
        tx.commit().await.map_err(HandlerError::transient)?;
        Ok(())
    }
}

fn handlers(ctx: &Context) -> Handlers {
    let (c1, c2, c3, c4) = (ctx.clone(), ctx.clone(), ctx.clone(), ctx.clone());
    Handlers::new()
        .on(move |d: Delivery<UserRegistered>| {
            let ctx = c1.clone();
            async move { ctx.apply(domain::welcome(&d.event, d.meta.id)).await }
        })
        .on(move |d: Delivery<OrderConfirmed>| {
            let ctx = c2.clone();
            async move {
                ctx.apply(domain::order_confirmed(&d.event, d.meta.id))
                    .await
            }
        })
        .on(move |d: Delivery<OrderCancelled>| {
            let ctx = c3.clone();
            async move {
                ctx.apply(domain::order_cancelled(&d.event, d.meta.id))
                    .await
            }
        })
        .on(move |d: Delivery<ShipmentScheduled>| {
            let ctx = c4.clone();
            async move {
                ctx.apply(domain::shipment_scheduled(&d.event, d.meta.id))
                    .await
            }
        })
}

/// The consumers this service runs: (source context, durable name, subjects).
fn consumer_specs() -> Vec<(&'static str, ConsumerSpec)> {
    vec![
        (
            "identity",
            ConsumerSpec::new("SHOP_IDENTITY", "notifications-user-events")
                .with_filter_subjects(vec![subject_for::<UserRegistered>()]),
        ),
        (
            "orders",
            ConsumerSpec::new("SHOP_ORDERS", "notifications-order-events").with_filter_subjects(
                vec![
                    subject_for::<OrderConfirmed>(),
                    subject_for::<OrderCancelled>(),
                ],
            ),
        ),
        (
            "shipping",
            ConsumerSpec::new("SHOP_SHIPPING", "notifications-shipping-events")
                .with_filter_subjects(vec![subject_for::<ShipmentScheduled>()]),
        ),
    ]
}

/// The inbox of every consumer (scoped by durable name), for the purge.
pub fn inboxes() -> Vec<Inbox> {
    consumer_specs()
        .into_iter()
        .map(|(_, spec)| Inbox::new(spec.durable))
        .collect()
}

/// The streams the consumers read, for checking the inbox retention against.
pub fn source_streams() -> Vec<StreamSpec> {
    consumer_specs()
        .into_iter()
        .map(|(context, _)| StreamSpec::for_context(context))
        .collect()
}

/// Runs every consumer until `stop` is cancelled. Streams are provisioned here too (the
/// same idempotent spec the producers use), so start order between services does not matter;
/// while NATS is unreachable each consumer retries with backoff.
pub fn spawn(
    js: &jetstream::Context,
    pool: &PgPool,
    replicas: usize,
    metrics: &shop_events::ConsumerMetrics,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    consumer_specs()
        .into_iter()
        .map(|(context, spec)| {
            // Each durable consumer claims in its own inbox, scoped by its name.
            let ctx = Context {
                pool: pool.clone(),
                inbox: Arc::new(Inbox::new(spec.durable.clone())),
            };
            let runner = ConsumerRunner::new(js.clone(), spec.clone(), handlers(&ctx))
                .with_metrics(metrics.clone());
            let stream = StreamSpec::for_context(context).with_replicas(replicas);
            let dead_letter = StreamSpec::dead_letter().with_replicas(replicas);
            let js = js.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let attempt = || {
                    let (runner, stream, dead_letter, js, stop) = (
                        runner.clone(),
                        stream.clone(),
                        dead_letter.clone(),
                        js.clone(),
                        stop.clone(),
                    );
                    async move {
                        stream.ensure(&js).await?;
                        dead_letter.ensure(&js).await?;
                        runner.run(stop.cancelled_owned()).await
                    }
                };
                retry_until_stopped(&spec.durable, &stop, attempt).await;
            })
        })
        .collect()
}
