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

use crate::types::{MeshState, Order};

mod events;
mod orders;
mod shipping;
mod stock;
#[cfg(test)]
mod tests;

use events::{consumers_behind, outbox_backlog, outboxes};
use orders::{
    captures_without_confirmed_order, confirmed_order_captures, orders_not_terminal,
    reservations_held, stuck_sagas,
};
use shipping::{duplicate_shipments, shipments_without_confirmed_order};
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
pub(super) struct Settled {
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
    pub(super) fn all(self, times: &[OffsetDateTime]) -> bool {
        self.cutoff
            .is_some_and(|cutoff| times.iter().all(|t| *t <= cutoff))
    }
}
