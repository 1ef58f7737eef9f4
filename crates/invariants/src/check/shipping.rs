//! The rules about shipments: goods leave only for a confirmed order, and once.

use std::collections::HashMap;

use super::{Kind, Settled, Violation};
use crate::types::{Order, ShipmentStatus, ShippingState};

pub(super) fn shipments_without_confirmed_order(
    shipping: &ShippingState,
    orders: &HashMap<&str, &Order>,
    settled: Settled,
    found: &mut Vec<Violation>,
) {
    for shipment in &shipping.shipments {
        if shipment.status == ShipmentStatus::Cancelled {
            continue;
        }
        let order = orders.get(shipment.order_id.as_str());
        let mut times = vec![shipment.updated_at];
        times.extend(order.map(|o| o.updated_at));
        if order.is_some_and(|o| o.status.is_confirmed()) || !settled.all(&times) {
            continue;
        }
        let order_is = order.map_or("unknown to orders", |o| o.status.name());
        found.push(Violation::new(
            Kind::ShipmentWithoutConfirmedOrder,
            format!("shipment {}", shipment.shipment_id),
            format!(
                "{} for order {}, which is {order_is}",
                shipment.status.name(),
                shipment.order_id
            ),
        ));
    }
}

pub(super) fn duplicate_shipments(shipping: &ShippingState, found: &mut Vec<Violation>) {
    let mut by_order: HashMap<&str, Vec<&str>> = HashMap::new();
    for shipment in &shipping.shipments {
        by_order
            .entry(shipment.order_id.as_str())
            .or_default()
            .push(shipment.shipment_id.as_str());
    }
    for (order, mut shipments) in by_order {
        if shipments.len() > 1 {
            shipments.sort_unstable();
            found.push(Violation::new(
                Kind::DuplicateShipment,
                format!("order {order}"),
                format!("{} shipments: {}", shipments.len(), shipments.join(", ")),
            ));
        }
    }
}
