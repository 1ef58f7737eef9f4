//! The durable consumer of shipment events (`orders-shipment-events` on `SHOP_SHIPPING`):
//! `ShipmentScheduled` moves a confirmed order to SHIPPED, `ShipmentDelivered` a shipped one to
//! DELIVERED, each appended as an order event with its read model row.
//!
//! Each event is applied through the consumer's inbox in the same transaction as its append,
//! so a redelivered or replayed event (same id) changes nothing. A delivery whose scheduling
//! has not been applied yet (the runner handles events concurrently) is retried later; an event
//! for an order that does not exist or went another way (cancelled) is applied as nothing. An
//! event that can never apply (ids that do not parse) is dead-lettered by the runner.

use async_nats::jetstream;
use shop_events::{
    ConsumerRunner, ConsumerSpec, Delivery, HandlerError, Handlers, Inbox, StreamSpec, subject_for,
};
use shop_proto::shipping::{ShipmentDelivered, ShipmentScheduled};
use shop_runtime::{CancellationToken, background::retry_until_stopped};
use uuid::Uuid;

use crate::{
    domain::{ShipmentChange, ShipmentDecision},
    error::OrdersError,
    store::{Change, PgOrderStore},
};

/// The durable consumer's name, also its inbox's scope.
pub const DURABLE: &str = "orders-shipment-events";

/// The context whose stream the consumer reads.
const SOURCE_CONTEXT: &str = "shipping";

/// The consumer: shipment scheduling and delivery only.
pub fn consumer_spec() -> ConsumerSpec {
    ConsumerSpec::new(StreamSpec::for_context(SOURCE_CONTEXT).name, DURABLE).with_filter_subjects(
        vec![
            subject_for::<ShipmentScheduled>(),
            subject_for::<ShipmentDelivered>(),
        ],
    )
}

/// The streams the consumer reads, for checking the inbox retention against.
pub fn source_streams() -> Vec<StreamSpec> {
    vec![StreamSpec::for_context(SOURCE_CONTEXT)]
}

/// The consumer's inbox.
pub fn inbox() -> Inbox {
    Inbox::new(DURABLE)
}

/// A field of a shipment event that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{field}: not a UUID: {value:?}")]
pub struct Malformed {
    field: &'static str,
    value: String,
}

fn uuid(field: &'static str, value: &str) -> Result<Uuid, Malformed> {
    Uuid::parse_str(value).map_err(|_| Malformed {
        field,
        value: value.to_owned(),
    })
}

/// The delivery is early: its predecessor has not been applied.
#[derive(Debug, thiserror::Error)]
#[error("order {0}: shipment event arrived before the one it follows; retrying")]
struct NotYet(Uuid);

async fn apply(
    store: &PgOrderStore,
    event_id: Uuid,
    order_id: Uuid,
    change: ShipmentChange,
) -> Result<(), HandlerError> {
    let inbox = inbox();
    let result = store
        .change(
            order_id,
            None,
            Some((&inbox, event_id)),
            |order| match order.decide_shipment(&change) {
                ShipmentDecision::Append(event) => Ok(Some(Change {
                    events: vec![event],
                    ..Change::default()
                })),
                ShipmentDecision::Ignore => Ok(None),
                ShipmentDecision::NotYet => Err(OrdersError::Contended(order.id)),
            },
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        // Not applied (the transaction rolled back, the inbox entry with it): later.
        Err(OrdersError::Contended(id)) => Err(HandlerError::transient(NotYet(id))),
        Err(OrdersError::NotFound(id)) => {
            tracing::warn!(order_id = %id, "shipment event for an unknown order; ignored");
            Ok(())
        }
        Err(err) => Err(HandlerError::transient(err)),
    }
}

fn handlers(store: &PgOrderStore) -> Handlers {
    let (scheduled_store, delivered_store) = (store.clone(), store.clone());
    Handlers::new()
        .on(move |d: Delivery<ShipmentScheduled>| {
            let store = scheduled_store.clone();
            async move {
                let order_id =
                    uuid("order_id", &d.event.order_id).map_err(HandlerError::permanent)?;
                let shipment_id =
                    uuid("shipment_id", &d.event.shipment_id).map_err(HandlerError::permanent)?;
                let change = ShipmentChange::Scheduled {
                    shipment_id,
                    tracking_number: d.event.tracking_number.clone(),
                };
                apply(&store, d.meta.id, order_id, change).await
            }
        })
        .on(move |d: Delivery<ShipmentDelivered>| {
            let store = delivered_store.clone();
            async move {
                let order_id =
                    uuid("order_id", &d.event.order_id).map_err(HandlerError::permanent)?;
                let shipment_id =
                    uuid("shipment_id", &d.event.shipment_id).map_err(HandlerError::permanent)?;
                apply(
                    &store,
                    d.meta.id,
                    order_id,
                    ShipmentChange::Delivered { shipment_id },
                )
                .await
            }
        })
}

/// Runs the consumer until `stop` is cancelled. The source and dead-letter streams are
/// provisioned here too, so start order between services does not matter; while NATS is
/// unreachable it retries with backoff.
pub fn spawn(
    js: &jetstream::Context,
    store: &PgOrderStore,
    replicas: usize,
    metrics: &shop_events::ConsumerMetrics,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let runner = ConsumerRunner::new(js.clone(), consumer_spec(), handlers(store))
        .with_metrics(metrics.clone());
    let stream = StreamSpec::for_context(SOURCE_CONTEXT).with_replicas(replicas);
    let dead_letter = StreamSpec::dead_letter().with_replicas(replicas);
    let (js, stop) = (js.clone(), stop.clone());
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
        retry_until_stopped(DURABLE, &stop, attempt).await;
    })
}
