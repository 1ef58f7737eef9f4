//! The durable consumer of order events (`shipping-order-events` on `SHOP_ORDERS`):
//! OrderConfirmed schedules a shipment, OrderCancelled cancels one not yet picked up.
//!
//! Each event is applied through the consumer's inbox in the same transaction as its effect,
//! so a redelivered or replayed event (same id) changes nothing; an order has at most one
//! shipment whatever the event ids (the store keys shipments by order). An event that can
//! never be applied (an id that does not parse, no lines, no address) is a permanent failure:
//! the runner moves it to the dead-letter stream and goes on with the next.

use std::collections::BTreeMap;

use async_nats::jetstream;
use shop_events::{
    ConsumerRunner, ConsumerSpec, Delivery, HandlerError, Handlers, Inbox, StreamSpec, subject_for,
};
use shop_proto::orders::{CancellationReason, OrderCancelled, OrderConfirmed};
use shop_runtime::{CancellationToken, background::retry_until_stopped};
use uuid::Uuid;

use crate::{
    domain::{Address, Line, MalformedEvent, NewShipment, default_currency},
    error::ShippingError,
    store::{OrderCancellation, PgShippingStore, Scheduling},
};

/// The durable consumer's name, also its inbox's scope.
pub const DURABLE: &str = "shipping-order-events";

/// The context whose stream the consumer reads.
const SOURCE_CONTEXT: &str = "orders";

/// The consumer: order confirmations and cancellations only.
pub fn consumer_spec() -> ConsumerSpec {
    ConsumerSpec::new(StreamSpec::for_context(SOURCE_CONTEXT).name, DURABLE).with_filter_subjects(
        vec![
            subject_for::<OrderConfirmed>(),
            subject_for::<OrderCancelled>(),
        ],
    )
}

/// The stream the consumer reads, for checking the inbox retention against.
pub fn source_streams() -> Vec<StreamSpec> {
    vec![StreamSpec::for_context(SOURCE_CONTEXT)]
}

/// The consumer's inbox, for the purge.
pub fn inbox() -> Inbox {
    Inbox::new(DURABLE)
}

fn uuid(field: &str, value: &str) -> Result<Uuid, MalformedEvent> {
    Uuid::parse_str(value).map_err(|_| MalformedEvent::new(field, format!("not a UUID: {value:?}")))
}

/// The shipment an OrderConfirmed asks for: its lines merged by product, priced in the order's
/// currency.
pub fn new_shipment(event: &OrderConfirmed) -> Result<NewShipment, MalformedEvent> {
    let order_id = uuid("order_id", &event.order_id)?;
    let address = event
        .shipping_address
        .as_ref()
        .ok_or_else(|| MalformedEvent::new("shipping_address", "missing"))?;
    if address.country_code.is_empty() {
        return Err(MalformedEvent::new(
            "shipping_address.country_code",
            "missing",
        ));
    }
    if event.lines.is_empty() {
        return Err(MalformedEvent::new(
            "lines",
            "an order ships at least one line",
        ));
    }
    let mut merged: BTreeMap<Uuid, i64> = BTreeMap::new();
    for (i, line) in event.lines.iter().enumerate() {
        let product_id = uuid(&format!("lines[{i}].product_id"), &line.product_id)?;
        if line.quantity <= 0 {
            return Err(MalformedEvent::new(
                format!("lines[{i}].quantity"),
                format!("must be positive, got {}", line.quantity),
            ));
        }
        *merged.entry(product_id).or_default() += i64::from(line.quantity);
    }
    let lines = merged
        .into_iter()
        .map(|(product_id, quantity)| Line {
            product_id,
            quantity,
        })
        .collect();
    let currency = event
        .total
        .as_ref()
        .map_or(default_currency().code, |total| {
            total.currency_code.as_str()
        });
    Ok(NewShipment::new(
        order_id,
        event.customer_id.clone(),
        Address {
            recipient_name: address.recipient_name.clone(),
            line1: address.line1.clone(),
            line2: address.line2.clone(),
            city: address.city.clone(),
            region: address.region.clone(),
            postal_code: address.postal_code.clone(),
            country_code: address.country_code.clone(),
        },
        lines,
        currency,
    ))
}

/// The cancellation reason recorded on a shipment cancelled with its order.
pub fn cancel_reason(event: &OrderCancelled) -> String {
    let reason = CancellationReason::try_from(event.reason)
        .unwrap_or(CancellationReason::Unspecified)
        .as_str_name()
        .trim_start_matches("CANCELLATION_REASON_");
    if event.detail.is_empty() {
        format!("order cancelled ({reason})")
    } else {
        format!("order cancelled ({reason}): {}", event.detail)
    }
}

fn transient(err: ShippingError) -> HandlerError {
    HandlerError::transient(err)
}

async fn on_confirmed(
    store: PgShippingStore,
    inbox: Inbox,
    delivery: Delivery<OrderConfirmed>,
) -> Result<(), HandlerError> {
    let new = new_shipment(&delivery.event).map_err(HandlerError::permanent)?;
    match store
        .schedule(&inbox, delivery.meta.id, &new)
        .await
        .map_err(transient)?
    {
        Scheduling::Scheduled(shipment) => tracing::info!(
            shipment_id = %shipment.id,
            order_id = %shipment.order_id,
            "shipment scheduled"
        ),
        Scheduling::SeenBefore => {
            tracing::debug!(event_id = %delivery.meta.id, "OrderConfirmed applied before");
        }
        Scheduling::OrderHasShipment(existing) => tracing::info!(
            order_id = %new.order_id,
            shipment_id = %existing,
            "order has a shipment already; nothing scheduled"
        ),
        Scheduling::OrderCancelled => tracing::info!(
            order_id = %new.order_id,
            "order was cancelled; nothing scheduled"
        ),
    }
    Ok(())
}

async fn on_cancelled(
    store: PgShippingStore,
    inbox: Inbox,
    delivery: Delivery<OrderCancelled>,
) -> Result<(), HandlerError> {
    let order_id = uuid("order_id", &delivery.event.order_id).map_err(HandlerError::permanent)?;
    let reason = cancel_reason(&delivery.event);
    match store
        .cancel_for_order(&inbox, delivery.meta.id, order_id, &reason)
        .await
        .map_err(transient)?
    {
        OrderCancellation::ShipmentCancelled(id) => {
            tracing::info!(shipment_id = %id, %order_id, "shipment cancelled with its order");
        }
        OrderCancellation::Kept(id, status) => tracing::info!(
            shipment_id = %id,
            %order_id,
            status = status.name(),
            "order cancelled after pickup; the shipment stays"
        ),
        OrderCancellation::NoShipment | OrderCancellation::SeenBefore => {}
    }
    Ok(())
}

fn handlers(store: &PgShippingStore) -> Handlers {
    let (confirmed_store, cancelled_store) = (store.clone(), store.clone());
    Handlers::new()
        .on(move |d: Delivery<OrderConfirmed>| on_confirmed(confirmed_store.clone(), inbox(), d))
        .on(move |d: Delivery<OrderCancelled>| on_cancelled(cancelled_store.clone(), inbox(), d))
}

/// Runs the consumer until `stop` is cancelled, `concurrency` events at once. The source
/// stream and the dead-letter stream are provisioned here too (the same idempotent specs the
/// producer uses), so start order between services does not matter; while NATS is unreachable
/// it retries with backoff.
pub fn spawn(
    js: &jetstream::Context,
    store: &PgShippingStore,
    replicas: usize,
    concurrency: usize,
    metrics: &shop_events::ConsumerMetrics,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let runner = ConsumerRunner::new(js.clone(), consumer_spec(), handlers(store))
        .with_concurrency(concurrency)
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

#[cfg(test)]
mod tests {
    use shop_proto::{
        common::{Money, PostalAddress},
        orders::OrderLine,
    };

    use super::*;

    fn confirmed() -> OrderConfirmed {
        let product = Uuid::from_u128(7).to_string();
        OrderConfirmed {
            order_id: Uuid::from_u128(1).to_string(),
            customer_id: "ada".into(),
            lines: vec![
                OrderLine {
                    product_id: product.clone(),
                    quantity: 2,
                    ..Default::default()
                },
                OrderLine {
                    product_id: Uuid::from_u128(3).to_string(),
                    quantity: 1,
                    ..Default::default()
                },
                OrderLine {
                    product_id: product,
                    quantity: 5,
                    ..Default::default()
                },
            ],
            total: Some(Money {
                units: 10,
                nanos: 0,
                currency_code: "USD".into(),
            }),
            shipping_address: Some(PostalAddress {
                recipient_name: "Ada".into(),
                line1: "1 Main St".into(),
                city: "Springfield".into(),
                postal_code: "12345".into(),
                country_code: "US".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_order_becomes_a_shipment_with_merged_lines_in_its_currency() {
        let new = new_shipment(&confirmed()).unwrap();
        assert_eq!(new.order_id, Uuid::from_u128(1));
        let lines: Vec<_> = new
            .lines
            .iter()
            .map(|l| (l.product_id, l.quantity))
            .collect();
        assert_eq!(
            lines,
            vec![(Uuid::from_u128(3), 1), (Uuid::from_u128(7), 7)]
        );
        assert_eq!(new.quote.cost.currency.code, "USD");
        assert_eq!(new.quote.carrier, "UPS");
    }

    #[test]
    fn an_event_that_cannot_ship_names_its_field() {
        type Break = fn(&mut OrderConfirmed);
        let cases: [(&str, Break); 5] = [
            ("order_id", |e| e.order_id = "nope".into()),
            ("shipping_address", |e| e.shipping_address = None),
            ("lines", |e| e.lines.clear()),
            ("lines[1].product_id", |e| {
                e.lines[1].product_id = "x".into();
            }),
            ("lines[0].quantity", |e| e.lines[0].quantity = 0),
        ];
        for (field, break_it) in cases {
            let mut event = confirmed();
            break_it(&mut event);
            assert_eq!(new_shipment(&event).unwrap_err().field, field);
        }
    }

    #[test]
    fn the_cancel_reason_names_the_orders_reason() {
        let event = OrderCancelled {
            reason: CancellationReason::CustomerRequested as i32,
            detail: "changed my mind".into(),
            ..Default::default()
        };
        assert_eq!(
            cancel_reason(&event),
            "order cancelled (CUSTOMER_REQUESTED): changed my mind"
        );
        assert_eq!(
            cancel_reason(&OrderCancelled::default()),
            "order cancelled (UNSPECIFIED)"
        );
    }
}
