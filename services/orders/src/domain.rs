//! The order aggregate: its events, the state they fold into, and the decisions commands make
//! against that state. No I/O: the store appends what these functions decide.
//!
//! An order's life is `PENDING → CONFIRMED → SHIPPED → DELIVERED`, or `CANCELLED` from
//! `PENDING` or `CONFIRMED` (a confirmed order that is cancelled is refunded). Every change is
//! one [`OrderEvent`]; the state is never written except as the fold of its events.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Now, to the microsecond: what PostgreSQL's `timestamptz` keeps, so a state folded in
/// memory equals the same state folded from the stored events.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now)
}

/// Nanos in one unit of a currency.
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// An amount of one currency, as `shop.common.v1.Money` (units and nanos of the same sign).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub units: i64,
    pub nanos: i32,
    pub currency: String,
}

impl Money {
    /// The amount in nanos of its currency.
    pub fn total_nanos(&self) -> i128 {
        i128::from(self.units) * NANOS_PER_UNIT + i128::from(self.nanos)
    }

    /// The amount of `nanos` in `currency`, `None` if it does not fit in `units`.
    pub fn from_nanos(nanos: i128, currency: &str) -> Option<Self> {
        let units = i64::try_from(nanos / NANOS_PER_UNIT).ok()?;
        let nanos = i32::try_from(nanos % NANOS_PER_UNIT).ok()?;
        Some(Self {
            units,
            nanos,
            currency: currency.to_owned(),
        })
    }

    /// This amount times `quantity`, `None` on overflow.
    pub fn times(&self, quantity: i32) -> Option<Self> {
        let nanos = self.total_nanos().checked_mul(i128::from(quantity))?;
        Self::from_nanos(nanos, &self.currency)
    }
}

/// Where an order ships to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub recipient_name: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country_code: String,
}

/// One priced line, frozen when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub quantity: i32,
    pub unit_price: Money,
    pub line_total: Money,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    Confirmed,
    Cancelled,
    Shipped,
    Delivered,
}

impl Status {
    /// The name stored in the read model's `status` column (the proto name without prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
            Self::Shipped => "SHIPPED",
            Self::Delivered => "DELIVERED",
        }
    }

    /// No change can follow (WatchOrder ends here).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Cancelled | Self::Delivered)
    }
}

/// Why an order was cancelled (`shop.orders.v1.CancellationReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelReason {
    CustomerRequested,
    OutOfStock,
    PaymentDeclined,
    PaymentFailed,
    SystemError,
}

impl CancelReason {
    /// The reason for a saga that compensated because of `failure`
    /// (`"<step>: failed|transient|timeout: <error>"`, see `shop_saga::StepInput::failure`).
    pub fn for_saga_failure(failure: &str) -> Self {
        let (step, rest) = failure.split_once(": ").unwrap_or((failure, ""));
        let definite = rest.starts_with("failed");
        match step {
            "reserve" if definite => Self::OutOfStock,
            "authorize" if definite => Self::PaymentDeclined,
            "authorize" | "capture" => Self::PaymentFailed,
            "confirm" if rest.contains(CANCELLED_BY_CUSTOMER) => Self::CustomerRequested,
            _ => Self::SystemError,
        }
    }
}

/// What a saga step reports when it finds that the customer cancelled the order.
pub const CANCELLED_BY_CUSTOMER: &str = "order cancelled by the customer";

/// One change of an order. Stored as JSON in `order_events.payload` (tagged by `type`).
// Events are built once per command and moved, never stored in bulk: boxing Placed would
// buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    /// The order was recorded; its saga starts.
    Placed {
        customer_id: Uuid,
        lines: Vec<Line>,
        total: Money,
        address: Address,
        reservation_id: Uuid,
    },
    /// Stock committed and payment captured.
    Confirmed { payment_id: String },
    /// The order will not be fulfilled.
    Cancelled {
        reason: CancelReason,
        detail: String,
        /// The payment made for it, if the saga made one.
        payment_id: Option<String>,
    },
    /// Shipping scheduled its shipment.
    ShipmentScheduled {
        shipment_id: Uuid,
        tracking_number: String,
    },
    /// Shipping delivered it.
    ShipmentDelivered { shipment_id: Uuid },
}

impl OrderEvent {
    /// The `order_events.type` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Placed { .. } => "Placed",
            Self::Confirmed { .. } => "Confirmed",
            Self::Cancelled { .. } => "Cancelled",
            Self::ShipmentScheduled { .. } => "ShipmentScheduled",
            Self::ShipmentDelivered { .. } => "ShipmentDelivered",
        }
    }
}

/// An event as stored: its place in the order's stream and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub version: i64,
    pub occurred_at: OffsetDateTime,
    pub event: OrderEvent,
}

/// The folded state of one order (also the read model's `body`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: Status,
    pub lines: Vec<Line>,
    pub total: Money,
    pub address: Address,
    pub cancel_reason: Option<CancelReason>,
    pub cancel_detail: String,
    /// Chosen when the order is placed; shown once the order is confirmed or cancelled.
    pub reservation_id: Uuid,
    pub payment_id: Option<String>,
    pub shipment_id: Option<Uuid>,
    pub tracking_number: String,
    /// The status before the last cancellation.
    pub cancelled_from: Option<Status>,
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A stream of events that does not fold into an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order {order_id}: event version {version} ({kind}): {reason}")]
pub struct FoldError {
    pub order_id: Uuid,
    pub version: i64,
    pub kind: &'static str,
    pub reason: String,
}

impl Order {
    /// Folds an order's events, in version order, into its state.
    pub fn fold(id: Uuid, events: &[Recorded]) -> Result<Self, FoldError> {
        let mut events = events.iter();
        let first = events.next().ok_or_else(|| FoldError {
            order_id: id,
            version: 0,
            kind: "none",
            reason: "no events".into(),
        })?;
        let mut order = Self::placed(id, first)?;
        for recorded in events {
            order.apply(recorded)?;
        }
        Ok(order)
    }

    fn placed(id: Uuid, recorded: &Recorded) -> Result<Self, FoldError> {
        let OrderEvent::Placed {
            customer_id,
            lines,
            total,
            address,
            reservation_id,
        } = &recorded.event
        else {
            return Err(FoldError {
                order_id: id,
                version: recorded.version,
                kind: recorded.event.kind(),
                reason: "an order's first event must be Placed".into(),
            });
        };
        if recorded.version != 1 {
            return Err(FoldError {
                order_id: id,
                version: recorded.version,
                kind: "Placed",
                reason: "Placed must be version 1".into(),
            });
        }
        Ok(Self {
            id,
            customer_id: *customer_id,
            status: Status::Pending,
            lines: lines.clone(),
            total: total.clone(),
            address: address.clone(),
            cancel_reason: None,
            cancel_detail: String::new(),
            reservation_id: *reservation_id,
            payment_id: None,
            shipment_id: None,
            tracking_number: String::new(),
            cancelled_from: None,
            version: 1,
            created_at: recorded.occurred_at,
            updated_at: recorded.occurred_at,
        })
    }

    /// Applies the next event of the stream.
    pub fn apply(&mut self, recorded: &Recorded) -> Result<(), FoldError> {
        let fail = |reason: String| FoldError {
            order_id: self.id,
            version: recorded.version,
            kind: recorded.event.kind(),
            reason,
        };
        if recorded.version != self.version + 1 {
            return Err(fail(format!(
                "expected version {}, the stream has a gap or a repeat",
                self.version + 1
            )));
        }
        let illegal = |from: Status| fail(format!("not allowed from {}", from.as_str()));
        match &recorded.event {
            OrderEvent::Placed { .. } => return Err(fail("a second Placed".into())),
            OrderEvent::Confirmed { payment_id } => {
                if self.status != Status::Pending {
                    return Err(illegal(self.status));
                }
                self.status = Status::Confirmed;
                self.payment_id = Some(payment_id.clone());
            }
            OrderEvent::Cancelled {
                reason,
                detail,
                payment_id,
            } => {
                if !matches!(self.status, Status::Pending | Status::Confirmed) {
                    return Err(illegal(self.status));
                }
                self.cancelled_from = Some(self.status);
                self.status = Status::Cancelled;
                self.cancel_reason = Some(*reason);
                self.cancel_detail.clone_from(detail);
                if payment_id.is_some() {
                    self.payment_id.clone_from(payment_id);
                }
            }
            OrderEvent::ShipmentScheduled {
                shipment_id,
                tracking_number,
            } => {
                if self.status != Status::Confirmed {
                    return Err(illegal(self.status));
                }
                self.status = Status::Shipped;
                self.shipment_id = Some(*shipment_id);
                self.tracking_number.clone_from(tracking_number);
            }
            OrderEvent::ShipmentDelivered { .. } => {
                if self.status != Status::Shipped {
                    return Err(illegal(self.status));
                }
                self.status = Status::Delivered;
            }
        }
        self.version = recorded.version;
        self.updated_at = recorded.occurred_at;
        Ok(())
    }

    /// The reservation id to show: once the saga has settled stock either way.
    pub fn visible_reservation_id(&self) -> Option<Uuid> {
        (self.status != Status::Pending).then_some(self.reservation_id)
    }

    /// What `CancelOrder` does to this order.
    pub fn decide_cancel(&self, detail: &str) -> Result<CancelDecision, DomainError> {
        match self.status {
            Status::Cancelled => Ok(CancelDecision::AlreadyCancelled),
            Status::Shipped | Status::Delivered => Err(DomainError::NotCancellable(self.status)),
            Status::Pending | Status::Confirmed => Ok(CancelDecision::Cancel {
                event: OrderEvent::Cancelled {
                    reason: CancelReason::CustomerRequested,
                    detail: if detail.is_empty() {
                        "cancelled by the customer".to_owned()
                    } else {
                        detail.to_owned()
                    },
                    payment_id: self.payment_id.clone(),
                },
                refund: self.status == Status::Confirmed,
            }),
        }
    }

    /// What a shipment event does to this order.
    pub fn decide_shipment(&self, event: &ShipmentChange) -> ShipmentDecision {
        match (event, self.status) {
            (
                ShipmentChange::Scheduled {
                    shipment_id,
                    tracking_number,
                },
                Status::Confirmed,
            ) => ShipmentDecision::Append(OrderEvent::ShipmentScheduled {
                shipment_id: *shipment_id,
                tracking_number: tracking_number.clone(),
            }),
            (ShipmentChange::Delivered { shipment_id }, Status::Shipped)
                if self.shipment_id == Some(*shipment_id) =>
            {
                ShipmentDecision::Append(OrderEvent::ShipmentDelivered {
                    shipment_id: *shipment_id,
                })
            }
            // Delivered before Scheduled was applied (events are handled concurrently): later.
            (ShipmentChange::Delivered { .. }, Status::Confirmed | Status::Pending)
            | (ShipmentChange::Scheduled { .. }, Status::Pending) => ShipmentDecision::NotYet,
            _ => ShipmentDecision::Ignore,
        }
    }
}

/// A shipment event, as orders reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipmentChange {
    Scheduled {
        shipment_id: Uuid,
        tracking_number: String,
    },
    Delivered {
        shipment_id: Uuid,
    },
}

/// What a shipment event changes.
#[allow(clippy::large_enum_variant)] // one per event handled, moved once
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipmentDecision {
    /// Record it.
    Append(OrderEvent),
    /// It cannot apply yet (its predecessor has not been applied): try again later.
    NotYet,
    /// Nothing to record: applied already, or the order went another way (cancelled).
    Ignore,
}

/// What `CancelOrder` does.
#[allow(clippy::large_enum_variant)] // one per call, moved once
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelDecision {
    /// Cancelled before: nothing to do.
    AlreadyCancelled,
    /// Append `event`; if `refund`, the order was confirmed: refund and restock.
    Cancel { event: OrderEvent, refund: bool },
}

/// A command the order's state refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Shipped or delivered orders are not cancelled.
    #[error("the order is {} and can no longer be cancelled", .0.as_str())]
    NotCancellable(Status),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(units: i64, nanos: i32) -> Money {
        Money {
            units,
            nanos,
            currency: "EUR".into(),
        }
    }

    fn at(version: i64, event: OrderEvent) -> Recorded {
        Recorded {
            version,
            occurred_at: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(version),
            event,
        }
    }

    fn placed() -> OrderEvent {
        OrderEvent::Placed {
            customer_id: Uuid::from_u128(2),
            lines: vec![],
            total: eur(10, 0),
            address: Address {
                recipient_name: "Ada".into(),
                line1: "1 Main St".into(),
                line2: String::new(),
                city: "Paris".into(),
                region: String::new(),
                postal_code: "75001".into(),
                country_code: "FR".into(),
            },
            reservation_id: Uuid::from_u128(3),
        }
    }

    #[test]
    fn money_multiplies_in_nanos() {
        assert_eq!(eur(2, 500_000_000).times(3), Some(eur(7, 500_000_000)));
        assert_eq!(eur(i64::MAX, 0).times(2), None);
    }

    #[test]
    fn the_happy_life_folds_to_delivered() {
        let shipment = Uuid::from_u128(9);
        let events = [
            at(1, placed()),
            at(
                2,
                OrderEvent::Confirmed {
                    payment_id: "p".into(),
                },
            ),
            at(
                3,
                OrderEvent::ShipmentScheduled {
                    shipment_id: shipment,
                    tracking_number: "T1".into(),
                },
            ),
            at(
                4,
                OrderEvent::ShipmentDelivered {
                    shipment_id: shipment,
                },
            ),
        ];
        let order = Order::fold(Uuid::from_u128(1), &events).unwrap();
        assert_eq!(order.status, Status::Delivered);
        assert_eq!(order.version, 4);
        assert_eq!(order.payment_id.as_deref(), Some("p"));
        assert_eq!(order.tracking_number, "T1");
        assert_eq!(order.updated_at, events[3].occurred_at);
        assert!(order.status.is_final());
    }

    #[test]
    fn gaps_repeats_and_illegal_moves_do_not_fold() {
        let id = Uuid::from_u128(1);
        assert!(Order::fold(id, &[]).is_err());
        let confirmed = OrderEvent::Confirmed {
            payment_id: "p".into(),
        };
        assert!(Order::fold(id, &[at(1, confirmed.clone())]).is_err());
        assert!(Order::fold(id, &[at(1, placed()), at(3, confirmed.clone())]).is_err());
        assert!(Order::fold(id, &[at(1, placed()), at(2, placed())]).is_err());
        let delivered = OrderEvent::ShipmentDelivered {
            shipment_id: Uuid::from_u128(9),
        };
        let err = Order::fold(id, &[at(1, placed()), at(2, delivered)]).unwrap_err();
        assert!(err.reason.contains("PENDING"), "{err}");
        let twice = [at(1, placed()), at(2, confirmed.clone()), at(3, confirmed)];
        assert!(Order::fold(id, &twice).is_err());
    }

    #[test]
    fn cancelling_depends_on_the_status() {
        let id = Uuid::from_u128(1);
        let pending = Order::fold(id, &[at(1, placed())]).unwrap();
        let CancelDecision::Cancel { event, refund } = pending.decide_cancel("").unwrap() else {
            panic!("a pending order is cancelled");
        };
        assert!(!refund);
        let mut cancelled = pending.clone();
        cancelled.apply(&at(2, event)).unwrap();
        assert_eq!(cancelled.status, Status::Cancelled);
        assert_eq!(cancelled.cancelled_from, Some(Status::Pending));
        assert_eq!(
            cancelled.decide_cancel("again").unwrap(),
            CancelDecision::AlreadyCancelled
        );

        let mut confirmed = pending;
        confirmed
            .apply(&at(
                2,
                OrderEvent::Confirmed {
                    payment_id: "p".into(),
                },
            ))
            .unwrap();
        assert!(matches!(
            confirmed.decide_cancel("no longer needed").unwrap(),
            CancelDecision::Cancel { refund: true, .. }
        ));
        confirmed
            .apply(&at(
                3,
                OrderEvent::ShipmentScheduled {
                    shipment_id: Uuid::from_u128(9),
                    tracking_number: "T".into(),
                },
            ))
            .unwrap();
        assert_eq!(
            confirmed.decide_cancel(""),
            Err(DomainError::NotCancellable(Status::Shipped))
        );
    }

    #[test]
    fn shipment_events_apply_in_order_or_wait() {
        let id = Uuid::from_u128(1);
        let shipment_id = Uuid::from_u128(9);
        let scheduled = ShipmentChange::Scheduled {
            shipment_id,
            tracking_number: "T".into(),
        };
        let delivered = ShipmentChange::Delivered { shipment_id };
        let mut order = Order::fold(id, &[at(1, placed())]).unwrap();
        assert_eq!(order.decide_shipment(&delivered), ShipmentDecision::NotYet);
        order
            .apply(&at(
                2,
                OrderEvent::Confirmed {
                    payment_id: "p".into(),
                },
            ))
            .unwrap();
        assert_eq!(order.decide_shipment(&delivered), ShipmentDecision::NotYet);
        let ShipmentDecision::Append(event) = order.decide_shipment(&scheduled) else {
            panic!("a confirmed order ships");
        };
        order.apply(&at(3, event)).unwrap();
        assert_eq!(order.decide_shipment(&scheduled), ShipmentDecision::Ignore);
        assert!(matches!(
            order.decide_shipment(&delivered),
            ShipmentDecision::Append(_)
        ));
    }

    #[test]
    fn saga_failures_map_to_reasons() {
        use CancelReason as R;
        for (failure, reason) in [
            ("reserve: failed: out of stock", R::OutOfStock),
            ("authorize: failed: payment declined", R::PaymentDeclined),
            ("authorize: transient: unavailable", R::PaymentFailed),
            ("capture: timeout: 5s", R::PaymentFailed),
            (
                "confirm: failed: order cancelled by the customer",
                R::CustomerRequested,
            ),
            ("commit: failed: reservation released", R::SystemError),
            ("reserve: transient: unavailable", R::SystemError),
        ] {
            assert_eq!(CancelReason::for_saga_failure(failure), reason, "{failure}");
        }
    }

    #[test]
    fn the_state_round_trips_as_json() {
        let order = Order::fold(Uuid::from_u128(1), &[at(1, placed())]).unwrap();
        let json = serde_json::to_string(&order).unwrap();
        assert_eq!(serde_json::from_str::<Order>(&json).unwrap(), order);
        let event = serde_json::to_value(placed()).unwrap();
        assert_eq!(event["type"], "Placed");
    }
}
