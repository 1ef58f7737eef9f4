//! Events shipping publishes (`proto/shop/shipping/v1/events.proto`) through the outbox;
//! `shop_runtime::outbox` relays them to JetStream (stream `SHOP_SHIPPING`).

use shop_events::EventEnvelope;
use shop_proto::{
    common::PostalAddress,
    shipping::{ShipmentCancelled, ShipmentDelivered, ShipmentLine, ShipmentScheduled},
};
use shop_runtime::convert::timestamp;
use time::OffsetDateTime;

use crate::domain::{Address, Line, Shipment};

/// Subject of `shop.shipping.v1.ShipmentScheduled`.
pub const SHIPMENT_SCHEDULED: &str = "shop.shipping.v1.shipment_scheduled";
/// Subject of `shop.shipping.v1.ShipmentDelivered`.
pub const SHIPMENT_DELIVERED: &str = "shop.shipping.v1.shipment_delivered";
/// Subject of `shop.shipping.v1.ShipmentCancelled`.
pub const SHIPMENT_CANCELLED: &str = "shop.shipping.v1.shipment_cancelled";

/// A line as it travels in events and responses.
pub(crate) fn line_to_pb(line: &Line) -> ShipmentLine {
    ShipmentLine {
        product_id: line.product_id.to_string(),
        // Lines come from order lines (i32), so this never saturates.
        quantity: i32::try_from(line.quantity).unwrap_or(i32::MAX),
    }
}

/// An address as it travels in events and responses.
pub(crate) fn address_to_pb(address: &Address) -> PostalAddress {
    PostalAddress {
        recipient_name: address.recipient_name.clone(),
        line1: address.line1.clone(),
        line2: address.line2.clone(),
        city: address.city.clone(),
        region: address.region.clone(),
        postal_code: address.postal_code.clone(),
        country_code: address.country_code.clone(),
    }
}

/// Every event of a shipment carries its order id as correlation id: the order's flow.
fn envelope<E: prost::Message + prost::Name>(
    shipment: &Shipment,
    event: E,
    at: OffsetDateTime,
) -> EventEnvelope<E> {
    let mut envelope = EventEnvelope::new(event).with_correlation_id(shipment.order_id.to_string());
    envelope.occurred_at = at;
    envelope
}

/// `ShipmentScheduled` for a shipment just created.
pub(crate) fn shipment_scheduled(shipment: &Shipment) -> EventEnvelope<ShipmentScheduled> {
    let event = ShipmentScheduled {
        shipment_id: shipment.id.to_string(),
        order_id: shipment.order_id.to_string(),
        customer_id: shipment.customer_id.clone(),
        carrier: shipment.carrier.clone(),
        tracking_number: shipment.tracking_number.clone(),
        address: Some(address_to_pb(&shipment.address)),
        lines: shipment.lines.iter().map(line_to_pb).collect(),
        estimated_delivery_at: Some(timestamp(shipment.estimated_delivery_at)),
        occurred_at: Some(timestamp(shipment.created_at)),
    };
    envelope(shipment, event, shipment.created_at)
}

/// `ShipmentDelivered` for a shipment just delivered.
pub(crate) fn shipment_delivered(shipment: &Shipment) -> EventEnvelope<ShipmentDelivered> {
    let at = shipment.delivered_at.unwrap_or(shipment.updated_at);
    let event = ShipmentDelivered {
        shipment_id: shipment.id.to_string(),
        order_id: shipment.order_id.to_string(),
        customer_id: shipment.customer_id.clone(),
        occurred_at: Some(timestamp(at)),
    };
    envelope(shipment, event, at)
}

/// `ShipmentCancelled` for a shipment just cancelled.
pub(crate) fn shipment_cancelled(shipment: &Shipment) -> EventEnvelope<ShipmentCancelled> {
    let event = ShipmentCancelled {
        shipment_id: shipment.id.to_string(),
        order_id: shipment.order_id.to_string(),
        customer_id: shipment.customer_id.clone(),
        reason: shipment.cancel_reason.clone().unwrap_or_default(),
        occurred_at: Some(timestamp(shipment.updated_at)),
    };
    envelope(shipment, event, shipment.updated_at)
}

#[cfg(test)]
mod tests {
    use shop_events::subject_for;

    use super::*;

    #[test]
    fn subjects_are_the_envelope_defaults() {
        assert_eq!(subject_for::<ShipmentScheduled>(), SHIPMENT_SCHEDULED);
        assert_eq!(subject_for::<ShipmentDelivered>(), SHIPMENT_DELIVERED);
        assert_eq!(subject_for::<ShipmentCancelled>(), SHIPMENT_CANCELLED);
    }
}
