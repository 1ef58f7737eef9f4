//! Every rule on hand-made states: a healthy mesh has no violation, one broken fact gives
//! exactly the violation it should, and what is younger than the grace period is let be.

use std::time::Duration;

use time::{OffsetDateTime, macros::datetime};

use super::{Kind, Violation, check};
use crate::types::*;

const GRACE: Duration = Duration::from_secs(60);
const NOW: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);
/// Long before `NOW - GRACE`.
const OLD: OffsetDateTime = datetime!(2026-01-01 11:00 UTC);
/// Within the grace period.
const FRESH: OffsetDateTime = datetime!(2026-01-01 11:59:30 UTC);

const PRODUCT: &str = "p-1";

fn order(id: &str, status: OrderStatus) -> Order {
    Order {
        order_id: id.into(),
        customer_id: "c-1".into(),
        status,
        reservation_id: format!("r-{id}"),
        payment_id: format!("pay-{id}"),
        total: Money {
            units: 10,
            nanos: 0,
            currency_code: "EUR".into(),
        },
        lines: vec![OrderLine {
            product_id: PRODUCT.into(),
            quantity: 2,
        }],
        created_at: OLD,
        updated_at: OLD,
    }
}

fn reservation(order_id: &str, status: ReservationStatus) -> Reservation {
    Reservation {
        reservation_id: format!("r-{order_id}"),
        order_id: order_id.into(),
        status,
        lines: vec![StockLine {
            product_id: PRODUCT.into(),
            quantity: 2,
        }],
        created_at: OLD,
        updated_at: OLD,
    }
}

fn payment(order_id: &str, status: PaymentStatus, captures: u32, refunded: i64) -> Payment {
    Payment {
        payment_id: format!("pay-{order_id}"),
        order_id: order_id.into(),
        status,
        currency: "EUR".into(),
        authorized_minor: 1000,
        captured_minor: 1000 * i64::from(captures),
        refunded_minor: refunded,
        captures,
        created_at: OLD,
        updated_at: OLD,
    }
}

fn shipment(order_id: &str, status: ShipmentStatus) -> Shipment {
    Shipment {
        shipment_id: format!("s-{order_id}"),
        order_id: order_id.into(),
        status,
        created_at: OLD,
        updated_at: OLD,
    }
}

/// Order `a` delivered, `b` cancelled before payment, `c` cancelled after confirmation
/// (refunded, restocked), `d` just placed and reserving.
fn healthy() -> MeshState {
    let mut pending = order("d", OrderStatus::Pending);
    pending.created_at = FRESH;
    pending.updated_at = FRESH;
    let mut reserving = reservation("d", ReservationStatus::Reserved);
    reserving.updated_at = FRESH;
    MeshState {
        orders: Some(OrdersState {
            orders: vec![
                order("a", OrderStatus::Delivered),
                order("b", OrderStatus::Cancelled),
                order("c", OrderStatus::Cancelled),
                pending,
            ],
            sagas: Sagas {
                counts: SagaCounts {
                    running: 1,
                    completed: 1,
                    compensated: 2,
                    ..SagaCounts::default()
                },
                stuck: vec![],
            },
            outbox: OutboxState::default(),
        }),
        inventory: Some(InventoryState {
            // Restocking c's 2 units added them to on_hand and available: 10 + 2 on hand.
            stock: vec![StockRow {
                product_id: PRODUCT.into(),
                on_hand: 12,
                reserved: 2,
                committed: 4,
                available: 6,
            }],
            reservations: vec![
                reservation("a", ReservationStatus::Committed),
                reservation("b", ReservationStatus::Released),
                reservation("c", ReservationStatus::Committed),
                reserving,
            ],
            outbox: OutboxState::default(),
        }),
        payments: Some(PaymentsState {
            payments: vec![
                payment("a", PaymentStatus::Captured, 1, 0),
                payment("b", PaymentStatus::Voided, 0, 0),
                payment("c", PaymentStatus::Refunded, 1, 1000),
            ],
            outbox: OutboxState::default(),
        }),
        shipping: Some(ShippingState {
            shipments: vec![shipment("a", ShipmentStatus::Delivered)],
            outbox: OutboxState::default(),
        }),
        jetstream: Some(JetStreamState {
            dead_letters: 0,
            consumers: vec![ConsumerPosition {
                stream: "SHOP_ORDERS".into(),
                durable: "shipping".into(),
                pending: 0,
                ack_pending: 0,
                last_ack_at: Some(OLD),
                created_at: OLD,
            }],
        }),
    }
}

fn kinds(violations: &[Violation]) -> Vec<Kind> {
    violations.iter().map(|v| v.kind).collect()
}

/// The violations of `state` at `NOW` with `GRACE`, which must all be of `kind`.
fn only(state: &MeshState, kind: Kind) -> Vec<Violation> {
    let found = check(state, GRACE, NOW);
    assert!(
        !found.is_empty() && found.iter().all(|v| v.kind == kind),
        "expected only {kind}, got {found:#?}"
    );
    found
}

fn clean(state: &MeshState) {
    let found = check(state, GRACE, NOW);
    assert!(found.is_empty(), "expected none, got {found:#?}");
}

fn orders(state: &mut MeshState) -> &mut Vec<Order> {
    &mut state.orders.as_mut().unwrap().orders
}

fn inventory(state: &mut MeshState) -> &mut InventoryState {
    state.inventory.as_mut().unwrap()
}

fn payments(state: &mut MeshState) -> &mut Vec<Payment> {
    &mut state.payments.as_mut().unwrap().payments
}

fn shipments(state: &mut MeshState) -> &mut Vec<Shipment> {
    &mut state.shipping.as_mut().unwrap().shipments
}

#[test]
fn a_healthy_mesh_has_no_violation() {
    clean(&healthy());
    clean(&MeshState::default());
}

#[test]
fn an_order_pending_past_the_grace_period_is_not_terminal() {
    let mut state = healthy();
    orders(&mut state)[3].created_at = OLD;
    let found = only(&state, Kind::OrderNotTerminal);
    assert_eq!(found[0].subject, "order d");
    // Its reservation is still RESERVED, which is fine while the order is pending.
}

#[test]
fn a_stuck_saga_is_reported_with_its_error() {
    let mut state = healthy();
    let sagas = &mut state.orders.as_mut().unwrap().sagas;
    sagas.counts.stuck = 3;
    sagas.stuck.push(StuckSaga {
        id: "saga-1".into(),
        error: "refund refused".into(),
    });
    let found = only(&state, Kind::SagaStuck);
    assert_eq!(found.len(), 2, "the listed one and the unlisted two");
    let listed: Vec<_> = found
        .iter()
        .map(|v| (v.subject.as_str(), v.detail.as_str()))
        .collect();
    assert!(
        listed.contains(&("saga saga-1", "refund refused")),
        "{listed:?}"
    );
}

#[test]
fn money_kept_for_a_cancelled_order_is_a_capture_without_confirmed_order() {
    let mut state = healthy();
    payments(&mut state)[2] = payment("c", PaymentStatus::PartiallyRefunded, 1, 400);
    let found = only(&state, Kind::CaptureWithoutConfirmedOrder);
    assert_eq!(found[0].subject, "payment pay-c");
    assert!(found[0].detail.contains("600"), "{}", found[0].detail);
}

#[test]
fn a_capture_for_an_unknown_order_is_reported_and_a_fresh_one_waits() {
    let mut state = healthy();
    payments(&mut state).push(payment("zz", PaymentStatus::Captured, 1, 0));
    only(&state, Kind::CaptureWithoutConfirmedOrder);
    payments(&mut state)[3].updated_at = FRESH;
    clean(&state);
}

#[test]
fn a_capture_while_the_order_is_pending_is_given_the_grace_period() {
    let mut state = healthy();
    payments(&mut state).push(payment("d", PaymentStatus::Captured, 1, 0));
    // Order d changed within the grace period: the saga is about to confirm it.
    clean(&state);
}

#[test]
fn a_confirmed_order_needs_exactly_one_capture() {
    let mut state = healthy();
    payments(&mut state)[0] = payment("a", PaymentStatus::Authorized, 0, 0);
    let found = only(&state, Kind::ConfirmedOrderCaptures);
    assert_eq!(found[0].subject, "order a");

    let mut state = healthy();
    payments(&mut state)[0] = payment("a", PaymentStatus::Captured, 2, 0);
    only(&state, Kind::ConfirmedOrderCaptures);

    // Two payments of one order, one capture each.
    let mut state = healthy();
    let mut second = payment("a", PaymentStatus::Captured, 1, 0);
    second.payment_id = "pay-a2".into();
    payments(&mut state).push(second);
    let found = check(&state, GRACE, NOW);
    assert_eq!(kinds(&found), vec![Kind::ConfirmedOrderCaptures]);
}

#[test]
fn stock_whose_counts_do_not_add_up_is_not_conserved() {
    let mut state = healthy();
    inventory(&mut state).stock[0].available = 7;
    let found = only(&state, Kind::StockNotConserved);
    assert!(
        found[0].detail.contains("on_hand 12"),
        "{}",
        found[0].detail
    );
}

#[test]
fn stock_that_disagrees_with_its_reservations_is_not_conserved() {
    let mut state = healthy();
    // Counts still add up (12 = 5 + 3 + 4), but only 2 units are RESERVED.
    let row = &mut inventory(&mut state).stock[0];
    row.reserved = 3;
    row.available = 5;
    let found = only(&state, Kind::StockNotConserved);
    assert!(
        found[0].detail.contains("reserved 3"),
        "{}",
        found[0].detail
    );

    let mut state = healthy();
    inventory(&mut state).reservations[2].status = ReservationStatus::Released;
    let found = only(&state, Kind::StockNotConserved);
    assert!(
        found[0].detail.contains("committed 4"),
        "{}",
        found[0].detail
    );
}

#[test]
fn negative_stock_and_reservations_of_unstocked_products_are_not_conserved() {
    let mut state = healthy();
    let row = &mut inventory(&mut state).stock[0];
    row.available = -1;
    row.on_hand = 5;
    only(&state, Kind::StockNotConserved);

    let mut state = healthy();
    inventory(&mut state).reservations[0].lines[0].product_id = "p-ghost".into();
    let found = only(&state, Kind::StockNotConserved);
    let subjects: Vec<_> = found.iter().map(|v| v.subject.as_str()).collect();
    assert_eq!(subjects, ["product p-1", "product p-ghost"]);
}

#[test]
fn a_reservation_left_reserved_by_a_terminal_order_is_held() {
    for status in [OrderStatus::Cancelled, OrderStatus::Confirmed] {
        let mut state = healthy();
        let mut terminal = orders(&mut state)[3].clone();
        terminal.status = status;
        terminal.created_at = OLD;
        terminal.updated_at = OLD;
        orders(&mut state)[3] = terminal;
        inventory(&mut state).reservations[3].updated_at = OLD;
        if status == OrderStatus::Confirmed {
            payments(&mut state).push(payment("d", PaymentStatus::Captured, 1, 0));
        }
        let found = only(&state, Kind::ReservationHeldByTerminalOrder);
        assert_eq!(found[0].subject, "reservation r-d");
    }
}

#[test]
fn a_reservation_of_a_just_cancelled_order_waits_for_the_grace_period() {
    let mut state = healthy();
    orders(&mut state)[3].status = OrderStatus::Cancelled;
    // Cancelled within the grace period: the release is on its way.
    clean(&state);
}

#[test]
fn a_live_shipment_needs_a_confirmed_order() {
    let mut state = healthy();
    shipments(&mut state).push(shipment("b", ShipmentStatus::Scheduled));
    let found = only(&state, Kind::ShipmentWithoutConfirmedOrder);
    assert_eq!(found[0].subject, "shipment s-b");
    assert!(found[0].detail.contains("CANCELLED"), "{}", found[0].detail);

    // Cancelled along with its order: fine.
    shipments(&mut state)[1].status = ShipmentStatus::Cancelled;
    clean(&state);

    // For a pending order, but only just scheduled: given time.
    let mut state = healthy();
    let mut fresh = shipment("d", ShipmentStatus::Scheduled);
    fresh.updated_at = FRESH;
    shipments(&mut state).push(fresh);
    clean(&state);
}

#[test]
fn two_shipments_for_one_order_are_a_duplicate() {
    let mut state = healthy();
    let mut second = shipment("a", ShipmentStatus::Cancelled);
    second.shipment_id = "s-a2".into();
    shipments(&mut state).push(second);
    let found = only(&state, Kind::DuplicateShipment);
    assert_eq!(found[0].subject, "order a");
    assert_eq!(found[0].detail, "2 shipments: s-a, s-a2");
}

#[test]
fn an_outbox_backlog_older_than_the_grace_period_is_unpublished() {
    let mut state = healthy();
    let outbox = &mut inventory(&mut state).outbox;
    outbox.unpublished = 3;
    outbox.oldest_unpublished_at = Some(FRESH);
    clean(&state);
    inventory(&mut state).outbox.oldest_unpublished_at = Some(OLD);
    let found = only(&state, Kind::EventUnpublished);
    assert_eq!(found[0].subject, "outbox of inventory");
}

#[test]
fn a_consumer_behind_without_progress_has_not_applied_events() {
    let mut state = healthy();
    let consumer = &mut state.jetstream.as_mut().unwrap().consumers[0];
    consumer.pending = 4;
    consumer.ack_pending = 1;
    let found = only(&state, Kind::EventNotApplied);
    assert_eq!(found[0].subject, "consumer SHOP_ORDERS/shipping");

    // Behind, but it acknowledged something a moment ago: it is working through them.
    let consumer = &mut state.jetstream.as_mut().unwrap().consumers[0];
    consumer.last_ack_at = Some(FRESH);
    clean(&state);

    // Never acknowledged anything: progress is measured from its creation.
    let consumer = &mut state.jetstream.as_mut().unwrap().consumers[0];
    consumer.last_ack_at = None;
    only(&state, Kind::EventNotApplied);
}

#[test]
fn dead_letters_and_parked_outbox_rows_are_reported() {
    let mut state = healthy();
    state.jetstream.as_mut().unwrap().dead_letters = 2;
    state.payments.as_mut().unwrap().outbox.parked = 1;
    let found = only(&state, Kind::DeadLetter);
    let subjects: Vec<_> = found.iter().map(|v| v.subject.as_str()).collect();
    assert_eq!(subjects, ["outbox of payments", "stream SHOP_DLQ"]);
}

#[test]
fn rules_across_services_are_skipped_without_orders() {
    let mut state = healthy();
    state.orders = None;
    payments(&mut state).push(payment("zz", PaymentStatus::Captured, 1, 0));
    shipments(&mut state).push(shipment("zz", ShipmentStatus::Scheduled));
    clean(&state);
}

#[test]
fn a_grace_period_beyond_all_time_settles_nothing() {
    let mut state = healthy();
    orders(&mut state)[3].created_at = OLD;
    assert!(check(&state, Duration::MAX, NOW).is_empty());
    assert_eq!(
        kinds(&check(&state, Duration::ZERO, NOW)),
        vec![Kind::OrderNotTerminal]
    );
}

#[test]
fn every_kind_has_a_distinct_name() {
    let names: std::collections::BTreeSet<_> = Kind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names.len(), Kind::ALL.len());
}
