//! The rules about orders and what they hold elsewhere: orders settle, sagas do not get stuck,
//! money is captured once for a confirmed order and kept only for one, stock is not held for
//! an order that is done.

use std::collections::HashMap;

use super::{Kind, Settled, Violation};
use crate::types::{InventoryState, Order, OrdersState, PaymentsState, ReservationStatus};

pub(super) fn orders_not_terminal(orders: &[Order], settled: Settled, found: &mut Vec<Violation>) {
    for order in orders {
        if !order.status.is_terminal() && settled.all(&[order.created_at]) {
            found.push(Violation::new(
                Kind::OrderNotTerminal,
                format!("order {}", order.order_id),
                format!("still PENDING, placed at {}", order.created_at),
            ));
        }
    }
}

pub(super) fn stuck_sagas(orders: &OrdersState, found: &mut Vec<Violation>) {
    for saga in &orders.sagas.stuck {
        found.push(Violation::new(
            Kind::SagaStuck,
            format!("saga {}", saga.id),
            saga.error.clone(),
        ));
    }
    let unlisted = orders
        .sagas
        .counts
        .stuck
        .saturating_sub(orders.sagas.stuck.len() as u64);
    if unlisted > 0 {
        found.push(Violation::new(
            Kind::SagaStuck,
            "sagas",
            format!("{unlisted} more stuck sagas than /admin/state listed"),
        ));
    }
}

pub(super) fn captures_without_confirmed_order(
    payments: &PaymentsState,
    orders: &HashMap<&str, &Order>,
    settled: Settled,
    found: &mut Vec<Violation>,
) {
    for payment in &payments.payments {
        let net = payment.net_captured_minor();
        if net <= 0 {
            continue;
        }
        let order = orders.get(payment.order_id.as_str());
        let mut times = vec![payment.updated_at];
        times.extend(order.map(|o| o.updated_at));
        if order.is_some_and(|o| o.status.is_confirmed()) || !settled.all(&times) {
            continue;
        }
        let order_is = order.map_or("unknown to orders", |o| o.status.name());
        found.push(Violation::new(
            Kind::CaptureWithoutConfirmedOrder,
            format!("payment {}", payment.payment_id),
            format!(
                "{net} minor units of {} captured and not refunded; order {} is {order_is}",
                payment.currency, payment.order_id
            ),
        ));
    }
}

pub(super) fn confirmed_order_captures(
    orders: &HashMap<&str, &Order>,
    payments: &PaymentsState,
    found: &mut Vec<Violation>,
) {
    let mut captures: HashMap<&str, u32> = HashMap::new();
    for payment in &payments.payments {
        *captures.entry(payment.order_id.as_str()).or_default() += payment.captures;
    }
    for order in orders.values().filter(|o| o.status.is_confirmed()) {
        let count = captures.get(order.order_id.as_str()).copied().unwrap_or(0);
        if count != 1 {
            found.push(Violation::new(
                Kind::ConfirmedOrderCaptures,
                format!("order {}", order.order_id),
                format!(
                    "{} with {count} captures across its payments, not exactly one",
                    order.status.name()
                ),
            ));
        }
    }
}

pub(super) fn reservations_held(
    inventory: &InventoryState,
    orders: &HashMap<&str, &Order>,
    settled: Settled,
    found: &mut Vec<Violation>,
) {
    for reservation in &inventory.reservations {
        if reservation.status != ReservationStatus::Reserved {
            continue;
        }
        let Some(order) = orders.get(reservation.order_id.as_str()) else {
            continue;
        };
        if order.status.is_terminal() && settled.all(&[order.updated_at, reservation.updated_at]) {
            found.push(Violation::new(
                Kind::ReservationHeldByTerminalOrder,
                format!("reservation {}", reservation.reservation_id),
                format!(
                    "still RESERVED; order {} is {}",
                    order.order_id,
                    order.status.name()
                ),
            ));
        }
    }
}
