//! The rules: a pure function from a [`MeshState`] snapshot, a grace period and the time now to
//! the list of [`Violation`]s. No I/O, so every rule is tested on hand-made states.
//!
//! A snapshot is read service by service, not atomically, and events take a moment to travel;
//! every rule that compares two services, or that waits for something to happen, only looks at
//! things that have not changed for `grace` (the later of the timestamps involved is at or
//! before `now - grace`). The rules within one service's snapshot need no grace.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::types::{
    MeshState, Order, OutboxState, PaymentsState, ReservationStatus, ShipmentStatus,
};

mod stock;
#[cfg(test)]
mod tests;

use stock::stock_conserved;

/// One invariant, one variant; the crate docs say what each means and why it must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An order still PENDING `grace` after it was placed.
    OrderNotTerminal,
    /// A saga that neither goes forward nor compensates.
    SagaStuck,
    /// Money captured and not refunded for an order that is not confirmed.
    CaptureWithoutConfirmedOrder,
    /// A confirmed order whose payments hold zero or several captures.
    ConfirmedOrderCaptures,
    /// A product's counts that do not add up, or disagree with its reservations.
    StockNotConserved,
    /// Stock still RESERVED for an order that is cancelled or confirmed.
    ReservationHeldByTerminalOrder,
    /// A live shipment for an order that is not confirmed.
    ShipmentWithoutConfirmedOrder,
    /// Two or more shipments for one order.
    DuplicateShipment,
    /// Outbox rows not published `grace` after they were written.
    EventUnpublished,
    /// A consumer with events published to it that it has not applied for `grace`.
    EventNotApplied,
    /// An event given up on: a message in `SHOP_DLQ`, or an outbox row its relay parked.
    DeadLetter,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Self; 11] = [
        Self::OrderNotTerminal,
        Self::SagaStuck,
        Self::CaptureWithoutConfirmedOrder,
        Self::ConfirmedOrderCaptures,
        Self::StockNotConserved,
        Self::ReservationHeldByTerminalOrder,
        Self::ShipmentWithoutConfirmedOrder,
        Self::DuplicateShipment,
        Self::EventUnpublished,
        Self::EventNotApplied,
        Self::DeadLetter,
    ];

    /// The kebab-case name the report prints.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::OrderNotTerminal => "order-not-terminal",
            Self::SagaStuck => "saga-stuck",
            Self::CaptureWithoutConfirmedOrder => "capture-without-confirmed-order",
            Self::ConfirmedOrderCaptures => "confirmed-order-captures",
            Self::StockNotConserved => "stock-not-conserved",
            Self::ReservationHeldByTerminalOrder => "reservation-held-by-terminal-order",
            Self::ShipmentWithoutConfirmedOrder => "shipment-without-confirmed-order",
            Self::DuplicateShipment => "duplicate-shipment",
            Self::EventUnpublished => "event-unpublished",
            Self::EventNotApplied => "event-not-applied",
            Self::DeadLetter => "dead-letter",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken invariant: what kind, about what (`order <id>`, `product <id>`, ...), and the
/// facts that break it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: Kind,
    pub subject: String,
    pub detail: String,
}

impl Violation {
    fn new(kind: Kind, subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind,
            subject: subject.into(),
            detail: detail.into(),
        }
    }
}

/// Every violation in `state`, sorted by kind then subject. Things younger than `grace` at
/// `now` are given time (see the module docs).
#[must_use]
pub fn check(state: &MeshState, grace: Duration, now: OffsetDateTime) -> Vec<Violation> {
    let settled = Settled::new(grace, now);
    let orders: HashMap<&str, &Order> = state
        .orders
        .iter()
        .flat_map(|o| &o.orders)
        .map(|o| (o.order_id.as_str(), o))
        .collect();
    let mut found = Vec::new();
    if let Some(o) = &state.orders {
        orders_not_terminal(&o.orders, settled, &mut found);
        stuck_sagas(o, &mut found);
    }
    if let Some(inventory) = &state.inventory {
        stock_conserved(inventory, &mut found);
    }
    if state.orders.is_some() {
        if let Some(payments) = &state.payments {
            captures_without_confirmed_order(payments, &orders, settled, &mut found);
            confirmed_order_captures(&orders, payments, &mut found);
        }
        if let Some(inventory) = &state.inventory {
            reservations_held(inventory, &orders, settled, &mut found);
        }
        if let Some(shipping) = &state.shipping {
            shipments_without_confirmed_order(shipping, &orders, settled, &mut found);
        }
    }
    if let Some(shipping) = &state.shipping {
        duplicate_shipments(shipping, &mut found);
    }
    for (service, outbox) in outboxes(state) {
        outbox_backlog(service, outbox, settled, &mut found);
    }
    if let Some(js) = &state.jetstream {
        consumers_behind(js, settled, &mut found);
    }
    found.sort_by(|a, b| (a.kind, &a.subject).cmp(&(b.kind, &b.subject)));
    found
}

/// Whether things last changed at some time have been left alone for the grace period.
#[derive(Debug, Clone, Copy)]
struct Settled {
    /// `now - grace`; `None` when that is before any representable time (nothing is settled).
    cutoff: Option<OffsetDateTime>,
}

impl Settled {
    fn new(grace: Duration, now: OffsetDateTime) -> Self {
        let cutoff = time::Duration::try_from(grace)
            .ok()
            .and_then(|g| now.checked_sub(g));
        Self { cutoff }
    }

    /// Every one of `times` is at or before `now - grace`.
    fn all(self, times: &[OffsetDateTime]) -> bool {
        self.cutoff
            .is_some_and(|cutoff| times.iter().all(|t| *t <= cutoff))
    }
}

fn orders_not_terminal(orders: &[Order], settled: Settled, found: &mut Vec<Violation>) {
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

fn stuck_sagas(orders: &crate::types::OrdersState, found: &mut Vec<Violation>) {
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

fn captures_without_confirmed_order(
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

fn confirmed_order_captures(
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

fn reservations_held(
    inventory: &crate::types::InventoryState,
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

fn shipments_without_confirmed_order(
    shipping: &crate::types::ShippingState,
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

fn duplicate_shipments(shipping: &crate::types::ShippingState, found: &mut Vec<Violation>) {
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

fn outboxes(state: &MeshState) -> Vec<(&'static str, &OutboxState)> {
    let mut all = Vec::new();
    all.extend(state.orders.as_ref().map(|s| ("orders", &s.outbox)));
    all.extend(state.inventory.as_ref().map(|s| ("inventory", &s.outbox)));
    all.extend(state.payments.as_ref().map(|s| ("payments", &s.outbox)));
    all.extend(state.shipping.as_ref().map(|s| ("shipping", &s.outbox)));
    all
}

fn outbox_backlog(
    service: &str,
    outbox: &OutboxState,
    settled: Settled,
    found: &mut Vec<Violation>,
) {
    if let Some(oldest) = outbox.oldest_unpublished_at
        && outbox.unpublished > 0
        && settled.all(&[oldest])
    {
        found.push(Violation::new(
            Kind::EventUnpublished,
            format!("outbox of {service}"),
            format!(
                "{} rows unpublished, the oldest written at {oldest}",
                outbox.unpublished
            ),
        ));
    }
    if outbox.parked > 0 {
        found.push(Violation::new(
            Kind::DeadLetter,
            format!("outbox of {service}"),
            format!("{} rows parked by the relay", outbox.parked),
        ));
    }
}

fn consumers_behind(
    js: &crate::types::JetStreamState,
    settled: Settled,
    found: &mut Vec<Violation>,
) {
    for consumer in &js.consumers {
        let last_progress = consumer.last_ack_at.unwrap_or(consumer.created_at);
        if consumer.behind() > 0 && settled.all(&[last_progress]) {
            found.push(Violation::new(
                Kind::EventNotApplied,
                format!("consumer {}/{}", consumer.stream, consumer.durable),
                format!(
                    "{} pending and {} unacknowledged, no ack since {last_progress}",
                    consumer.pending, consumer.ack_pending
                ),
            ));
        }
    }
    if js.dead_letters > 0 {
        found.push(Violation::new(
            Kind::DeadLetter,
            "stream SHOP_DLQ",
            format!("{} dead letters", js.dead_letters),
        ));
    }
}
