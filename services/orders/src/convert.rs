//! Domain ↔ protobuf: the `Order` read model message and the events orders publishes
//! (`proto/shop/orders/v1/events.proto`, stream `SHOP_ORDERS`, relayed from the outbox).

use shop_events::EventEnvelope;
use shop_proto::{
    common::{Money as PbMoney, PostalAddress},
    orders::{self as pb, OrderCancelled, OrderConfirmed, OrderPlaced},
};
use shop_runtime::convert::timestamp;

use crate::domain::{Address, CancelReason, Line, Money, Order, Status};

pub fn money_to_pb(money: &Money) -> PbMoney {
    PbMoney {
        units: money.units,
        nanos: money.nanos,
        currency_code: money.currency.clone(),
    }
}

pub fn money_from_pb(money: &PbMoney) -> Money {
    Money {
        units: money.units,
        nanos: money.nanos,
        currency: money.currency_code.clone(),
    }
}

pub fn address_to_pb(address: &Address) -> PostalAddress {
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

pub fn address_from_pb(address: &PostalAddress) -> Address {
    Address {
        recipient_name: address.recipient_name.clone(),
        line1: address.line1.clone(),
        line2: address.line2.clone(),
        city: address.city.clone(),
        region: address.region.clone(),
        postal_code: address.postal_code.clone(),
        country_code: address.country_code.clone(),
    }
}

fn line_to_pb(line: &Line) -> pb::OrderLine {
    pb::OrderLine {
        product_id: line.product_id.to_string(),
        sku: line.sku.clone(),
        name: line.name.clone(),
        quantity: line.quantity,
        unit_price: Some(money_to_pb(&line.unit_price)),
        line_total: Some(money_to_pb(&line.line_total)),
    }
}

pub fn status_to_pb(status: Status) -> pb::OrderStatus {
    match status {
        Status::Pending => pb::OrderStatus::Pending,
        Status::Confirmed => pb::OrderStatus::Confirmed,
        Status::Cancelled => pb::OrderStatus::Cancelled,
        Status::Shipped => pb::OrderStatus::Shipped,
        Status::Delivered => pb::OrderStatus::Delivered,
    }
}

pub fn status_from_pb(status: pb::OrderStatus) -> Option<Status> {
    match status {
        pb::OrderStatus::Unspecified => None,
        pb::OrderStatus::Pending => Some(Status::Pending),
        pb::OrderStatus::Confirmed => Some(Status::Confirmed),
        pb::OrderStatus::Cancelled => Some(Status::Cancelled),
        pb::OrderStatus::Shipped => Some(Status::Shipped),
        pb::OrderStatus::Delivered => Some(Status::Delivered),
    }
}

fn reason_to_pb(reason: CancelReason) -> pb::CancellationReason {
    match reason {
        CancelReason::CustomerRequested => pb::CancellationReason::CustomerRequested,
        CancelReason::OutOfStock => pb::CancellationReason::OutOfStock,
        CancelReason::PaymentDeclined => pb::CancellationReason::PaymentDeclined,
        CancelReason::PaymentFailed => pb::CancellationReason::PaymentFailed,
        CancelReason::SystemError => pb::CancellationReason::SystemError,
    }
}

/// The read model message of `order`.
pub fn order_to_pb(order: &Order) -> pb::Order {
    pb::Order {
        order_id: order.id.to_string(),
        customer_id: order.customer_id.to_string(),
        status: status_to_pb(order.status).into(),
        lines: order.lines.iter().map(line_to_pb).collect(),
        total: Some(money_to_pb(&order.total)),
        shipping_address: Some(address_to_pb(&order.address)),
        cancellation_reason: order
            .cancel_reason
            .map_or(pb::CancellationReason::Unspecified, reason_to_pb)
            .into(),
        cancellation_detail: order.cancel_detail.clone(),
        reservation_id: order
            .visible_reservation_id()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        payment_id: order.payment_id.clone().unwrap_or_default(),
        shipment_id: order
            .shipment_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        tracking_number: order.tracking_number.clone(),
        version: order.version,
        created_at: Some(timestamp(order.created_at)),
        updated_at: Some(timestamp(order.updated_at)),
    }
}

/// Every event of an order carries its id as correlation id: the order's flow.
fn envelope<E: prost::Message + prost::Name>(order: &Order, event: E) -> EventEnvelope<E> {
    let mut envelope = EventEnvelope::new(event).with_correlation_id(order.id.to_string());
    envelope.occurred_at = order.updated_at;
    envelope
}

/// `OrderPlaced` for an order just placed.
pub fn order_placed(order: &Order) -> EventEnvelope<OrderPlaced> {
    envelope(
        order,
        OrderPlaced {
            order_id: order.id.to_string(),
            customer_id: order.customer_id.to_string(),
            lines: order.lines.iter().map(line_to_pb).collect(),
            total: Some(money_to_pb(&order.total)),
            shipping_address: Some(address_to_pb(&order.address)),
            version: order.version,
            occurred_at: Some(timestamp(order.updated_at)),
        },
    )
}

/// `OrderConfirmed` for an order just confirmed.
pub fn order_confirmed(order: &Order) -> EventEnvelope<OrderConfirmed> {
    envelope(
        order,
        OrderConfirmed {
            order_id: order.id.to_string(),
            customer_id: order.customer_id.to_string(),
            lines: order.lines.iter().map(line_to_pb).collect(),
            total: Some(money_to_pb(&order.total)),
            shipping_address: Some(address_to_pb(&order.address)),
            payment_id: order.payment_id.clone().unwrap_or_default(),
            reservation_id: order.reservation_id.to_string(),
            version: order.version,
            occurred_at: Some(timestamp(order.updated_at)),
        },
    )
}

/// `OrderCancelled` for an order just cancelled.
pub fn order_cancelled(order: &Order) -> EventEnvelope<OrderCancelled> {
    envelope(
        order,
        OrderCancelled {
            order_id: order.id.to_string(),
            customer_id: order.customer_id.to_string(),
            reason: order
                .cancel_reason
                .map_or(pb::CancellationReason::Unspecified, reason_to_pb)
                .into(),
            detail: order.cancel_detail.clone(),
            previous_status: order
                .cancelled_from
                .map_or(pb::OrderStatus::Unspecified, status_to_pb)
                .into(),
            reservation_id: order.reservation_id.to_string(),
            payment_id: order.payment_id.clone().unwrap_or_default(),
            lines: order.lines.iter().map(line_to_pb).collect(),
            version: order.version,
            occurred_at: Some(timestamp(order.updated_at)),
        },
    )
}
