//! What the checker reads: each service's `GET /admin/state` body as serde types, JetStream's
//! consumer positions and dead letters, and [`MeshState`], the snapshot of all of them.
//!
//! Ids are kept as the strings the services send (UUIDs); statuses are the proto enum names
//! without their prefix (`CONFIRMED`, `CAPTURED`, ...); timestamps are RFC 3339. An unknown
//! status fails decoding: the checker does not guess what a state it does not know means.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One snapshot of the mesh. A service that was not collected is `None`; the rules that need
/// it are skipped and the report says so.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeshState {
    pub orders: Option<OrdersState>,
    pub inventory: Option<InventoryState>,
    pub payments: Option<PaymentsState>,
    pub shipping: Option<ShippingState>,
    pub jetstream: Option<JetStreamState>,
}

/// A service's transactional outbox: rows not yet published and rows its relay parked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxState {
    pub unpublished: i64,
    pub parked: i64,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub oldest_unpublished_at: Option<OffsetDateTime>,
}

// === orders ===

/// Orders' `GET /admin/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrdersState {
    pub orders: Vec<Order>,
    pub sagas: Sagas,
    pub outbox: OutboxState,
}

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Cancelled,
    Shipped,
    Delivered,
}

impl OrderStatus {
    /// The proto enum name without its prefix.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
            Self::Shipped => "SHIPPED",
            Self::Delivered => "DELIVERED",
        }
    }

    /// Confirmed and not cancelled since: stock committed and payment captured.
    #[must_use]
    pub fn is_confirmed(self) -> bool {
        matches!(self, Self::Confirmed | Self::Shipped | Self::Delivered)
    }

    /// The order saga has finished with it, one way or the other.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        self != Self::Pending
    }
}

/// One order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    /// Empty until the saga has chosen it.
    #[serde(default)]
    pub reservation_id: String,
    /// Empty until the saga has authorized a payment.
    #[serde(default)]
    pub payment_id: String,
    pub total: Money,
    pub lines: Vec<OrderLine>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// `shop.common.v1.Money` in its JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub units: i64,
    #[serde(default)]
    pub nanos: i32,
    pub currency_code: String,
}

/// A quantity of one product on an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: String,
    pub quantity: i32,
}

/// The order sagas: how many are in each state, and the stuck ones with their errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sagas {
    pub counts: SagaCounts,
    #[serde(default)]
    pub stuck: Vec<StuckSaga>,
}

/// Saga runs per state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaCounts {
    pub running: u64,
    pub completed: u64,
    pub compensating: u64,
    pub compensated: u64,
    pub stuck: u64,
}

/// A saga that gave up: neither forward nor compensation can proceed without an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StuckSaga {
    pub id: String,
    pub error: String,
}

// === inventory ===

/// Inventory's `GET /admin/state`, read in one snapshot transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryState {
    pub stock: Vec<StockRow>,
    pub reservations: Vec<Reservation>,
    pub outbox: OutboxState,
}

/// The stock of one product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRow {
    pub product_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub committed: i64,
    pub available: i64,
}

/// Where a reservation is; only `Reserved` holds stock that can still go back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    Reserved,
    Released,
    Committed,
}

/// A hold of stock for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub reservation_id: String,
    pub order_id: String,
    pub status: ReservationStatus,
    pub lines: Vec<StockLine>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A quantity of one product in a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    pub product_id: String,
    pub quantity: i64,
}

// === payments ===

/// Payments' `GET /admin/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentsState {
    pub payments: Vec<Payment>,
    pub outbox: OutboxState,
}

/// Where a payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Authorized,
    Declined,
    Voided,
    Captured,
    PartiallyRefunded,
    Refunded,
}

/// One payment, its amounts in integer minor units of `currency` (cents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: String,
    pub order_id: String,
    pub status: PaymentStatus,
    pub currency: String,
    pub authorized_minor: i64,
    /// The sum of the ledger's capture entries.
    pub captured_minor: i64,
    /// The sum of the ledger's refund entries.
    pub refunded_minor: i64,
    /// How many capture entries the ledger holds.
    pub captures: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Payment {
    /// Money charged and not given back.
    #[must_use]
    pub fn net_captured_minor(&self) -> i64 {
        self.captured_minor.saturating_sub(self.refunded_minor)
    }
}

// === shipping ===

/// Shipping's `GET /admin/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingState {
    pub shipments: Vec<Shipment>,
    pub outbox: OutboxState,
}

/// Where a shipment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShipmentStatus {
    Scheduled,
    InTransit,
    Delivered,
    Cancelled,
}

impl ShipmentStatus {
    /// The proto enum name without its prefix.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Scheduled => "SCHEDULED",
            Self::InTransit => "IN_TRANSIT",
            Self::Delivered => "DELIVERED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// One shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub shipment_id: String,
    pub order_id: String,
    pub status: ShipmentStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

// === JetStream ===

/// Dead letters and where each durable consumer stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JetStreamState {
    /// Messages in `SHOP_DLQ`: events some consumer gave up on.
    pub dead_letters: u64,
    /// Every durable consumer of every stream but `SHOP_DLQ`.
    pub consumers: Vec<ConsumerPosition>,
}

/// One durable consumer's backlog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerPosition {
    pub stream: String,
    pub durable: String,
    /// Messages of its stream not yet delivered to it.
    pub pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub ack_pending: u64,
    /// When it last acknowledged a message, if ever.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_ack_at: Option<OffsetDateTime>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl ConsumerPosition {
    /// Events published to it and not applied yet.
    #[must_use]
    pub fn behind(&self) -> u64 {
        self.pending.saturating_add(self.ack_pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape orders serves, as agreed with its author.
    const ORDERS: &str = r#"{
        "orders": [{
            "order_id": "0190a0a0-0000-7000-8000-000000000001",
            "customer_id": "0190a0a0-0000-7000-8000-000000000002",
            "status": "PENDING",
            "reservation_id": "",
            "payment_id": "",
            "total": {"units": 19, "nanos": 500000000, "currency_code": "EUR"},
            "lines": [{"product_id": "0190a0a0-0000-7000-8000-000000000003", "quantity": 2}],
            "created_at": "2026-01-01T10:00:00Z",
            "updated_at": "2026-01-01T10:00:00.123456Z"
        }],
        "sagas": {
            "counts": {"running": 1, "completed": 5, "compensating": 0, "compensated": 2, "stuck": 1},
            "stuck": [{"id": "0190a0a0-0000-7000-8000-000000000009", "error": "refund refused"}]
        },
        "outbox": {"unpublished": 2, "parked": 0, "oldest_unpublished_at": "2026-01-01T10:00:01Z"}
    }"#;

    #[test]
    fn orders_state_decodes_in_the_agreed_shape() {
        let state: OrdersState = serde_json::from_str(ORDERS).unwrap();
        let order = &state.orders[0];
        assert_eq!(order.status, OrderStatus::Pending);
        assert_eq!(order.reservation_id, "");
        assert_eq!(order.total.nanos, 500_000_000);
        assert_eq!(order.lines[0].quantity, 2);
        assert_eq!(state.sagas.counts.stuck, 1);
        assert_eq!(state.sagas.stuck[0].error, "refund refused");
        assert!(state.outbox.oldest_unpublished_at.is_some());
        for status in ["CONFIRMED", "CANCELLED", "SHIPPED", "DELIVERED"] {
            let json = ORDERS.replace("PENDING", status);
            let state: OrdersState = serde_json::from_str(&json).unwrap();
            assert_eq!(state.orders[0].status.name(), status);
        }
        assert!(serde_json::from_str::<OrdersState>(&ORDERS.replace("PENDING", "LOST")).is_err());
    }

    #[test]
    fn an_outbox_without_a_backlog_has_no_oldest_row() {
        let outbox: OutboxState = serde_json::from_str(r#"{"unpublished":0,"parked":1}"#).unwrap();
        assert_eq!(outbox.oldest_unpublished_at, None);
        assert_eq!(
            serde_json::to_string(&outbox).unwrap(),
            r#"{"unpublished":0,"parked":1}"#
        );
    }
}
