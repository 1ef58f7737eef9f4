//! The mesh's invariant checker: reads every service's state through its own admin endpoint
//! (`GET /admin/state`, never another service's tables) and JetStream's consumer positions,
//! and reports what breaks the rules the order flow must keep.
//!
//! [`collect()`] reads a [`MeshState`]; [`check()`] is a pure function of that snapshot, a grace
//! period and the time now; [`render()`] writes the report `meshctl check` prints. The crate
//! depends on no service and not on the service kit: it knows the services only by the JSON
//! they serve, described in [`types`].
//!
//! # The invariants
//!
//! The order saga reserves stock (the reservation id chosen by orders), authorizes the payment,
//! captures it, commits the stock and confirms the order; a failure compensates in reverse
//! (release, void) and cancels the order; an order cancelled after its confirmation is
//! refunded (payment REFUNDED) and its committed units are put back with AdjustStock. Shipping
//! schedules one shipment per confirmed order and cancels it with the order. So, where
//! "settled" means unchanged for the grace period (every timestamp involved at or before
//! `now - grace`; a snapshot is read service by service and events take a moment, so what is
//! younger is given time):
//!
//! - [`OrderNotTerminal`](Kind::OrderNotTerminal): an order PENDING a grace period after it
//!   was placed. Every other status is terminal for the saga (CONFIRMED, SHIPPED and DELIVERED
//!   have their money and stock; CANCELLED was compensated). A saga that never finishes holds
//!   stock and money hostage.
//! - [`SagaStuck`](Kind::SagaStuck): a saga orders reports as stuck (it can go neither forward
//!   nor back without an operator), one per listed saga, plus one for any the count has beyond
//!   the list.
//! - [`CaptureWithoutConfirmedOrder`](Kind::CaptureWithoutConfirmedOrder): a payment whose
//!   captured amount exceeds its refunded amount (money kept) while its order is not
//!   CONFIRMED, SHIPPED or DELIVERED, or is unknown to orders, both settled. A fully refunded
//!   payment of a cancelled order is fine; a partial refund of one is not.
//! - [`ConfirmedOrderCaptures`](Kind::ConfirmedOrderCaptures): a CONFIRMED, SHIPPED or
//!   DELIVERED order whose payments (all payments naming the order) hold other than exactly
//!   one capture entry in their ledgers: none means goods without money, two means the
//!   customer paid twice. No grace: the capture happens before the confirmation, and orders
//!   is read before payments.
//! - [`StockNotConserved`](Kind::StockNotConserved): inventory keeps, per product,
//!   `on_hand = available + reserved + committed` with no count negative (committed units
//!   stay on hand: inventory does not ship; a restock after a cancellation raises `on_hand`
//!   and `available`). Besides that sum, `reserved` must equal the units on RESERVED
//!   reservations and `committed` the units on COMMITTED ones (RELEASED ones hold nothing),
//!   and no reservation may hold units of a product without a stock row. Inventory serves its
//!   snapshot from one transaction, so no grace.
//! - [`ReservationHeldByTerminalOrder`](Kind::ReservationHeldByTerminalOrder): a reservation
//!   still RESERVED (neither committed nor released) whose order is CANCELLED, CONFIRMED,
//!   SHIPPED or DELIVERED, both settled: the stock is held for nobody until it expires, or a
//!   confirmed order's stock was never committed. Reservations of orders unknown to orders
//!   (other callers, tests) are left to inventory's expiry.
//! - [`ShipmentWithoutConfirmedOrder`](Kind::ShipmentWithoutConfirmedOrder): a shipment not
//!   CANCELLED whose order is not CONFIRMED, SHIPPED or DELIVERED, or is unknown to orders,
//!   both settled: goods leave for an order nobody paid for.
//! - [`DuplicateShipment`](Kind::DuplicateShipment): two shipments, of any status, for one
//!   order.
//! - [`EventUnpublished`](Kind::EventUnpublished): a service's outbox with rows whose oldest
//!   was written more than the grace period ago: committed changes whose events have not left.
//! - [`EventNotApplied`](Kind::EventNotApplied): a durable consumer with events published to
//!   it and not applied (`num_pending + num_ack_pending > 0`) that has acknowledged nothing
//!   for the grace period (measured from its creation if it never did): events published and
//!   not consumed. With the rule above this covers an event from its outbox row to its
//!   consumer's ack.
//! - [`DeadLetter`](Kind::DeadLetter): any message in `SHOP_DLQ` (an event a consumer gave up
//!   on) and any outbox row its relay parked (an event the server kept refusing). Either waits
//!   for an operator, so neither is ever fine.
//!
//! The rules that compare orders with another service are skipped when orders was not read
//! (the report names what was not checked).
//!
//! # Layout
//!
//! - [`types`]: the serde types of each `/admin/state`, JetStream's part and [`MeshState`].
//! - [`check`](mod@check): the rules, [`Kind`] and [`Violation`].
//! - [`collect`](mod@collect): reading the snapshot ([`Targets`], [`CollectError`]).
//! - [`render`](mod@render): the report.

pub mod check;
pub mod collect;
mod error;
pub mod render;
pub mod types;

pub use check::{Kind, Violation, check};
pub use collect::{Targets, collect};
pub use error::CollectError;
pub use render::render;
pub use types::MeshState;
