//! The invariant checker (`shop_invariants`) on the real service: a healthy inventory passes,
//! and each violation inventory's state can show, injected by hand behind the API, is found.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use shop_invariants::types::{Money, Order, OrderStatus, OrdersState, OutboxState, Sagas};
use shop_invariants::{Kind, MeshState, Targets, Violation, check, collect};
use shop_proto::inventory::CommitRequest;
use shop_testkit::wait_until;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};

fn targets(app: &TestApp) -> Targets {
    Targets {
        inventory: Some(app.admin_addr),
        nats_url: Some(app.nats.url()),
        ..Targets::default()
    }
}

/// Collects `targets`, adds `orders`, and checks with no grace period: whatever is wrong now
/// is reported.
async fn violations(targets: &Targets, orders: Option<OrdersState>) -> Vec<Violation> {
    violations_after(targets, orders, Duration::ZERO).await
}

async fn violations_after(
    targets: &Targets,
    orders: Option<OrdersState>,
    grace: Duration,
) -> Vec<Violation> {
    let mut state: MeshState = collect(targets).await.unwrap();
    state.orders = orders;
    check(&state, grace, OffsetDateTime::now_utc())
}

fn kinds(found: &[Violation]) -> Vec<Kind> {
    found.iter().map(|v| v.kind).collect()
}

async fn outbox_drained(app: &TestApp) {
    let db = app.db.clone();
    wait_until(Duration::from_secs(20), || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&db)
                .await
                .is_ok_and(|n| n == 0)
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_healthy_inventory_has_no_violation() {
    let mut app = spawn_app().await;
    let product = Uuid::new_v4();
    app.stock(product, 10).await;
    let held = app.reserve(&[(product, 2)]).await;
    let sold = app.reserve(&[(product, 3)]).await;
    app.client
        .commit(CommitRequest {
            reservation_id: sold.reservation_id,
        })
        .await
        .unwrap();
    outbox_drained(&app).await;
    // The order holding `held` was just placed: its reservation is fine.
    let now = OffsetDateTime::now_utc();
    let orders = orders_state(&[(&held.order_id, OrderStatus::Pending)], now);
    let found = violations_after(&targets(&app), Some(orders), Duration::from_secs(60)).await;
    assert!(found.is_empty(), "{found:#?}");
    app.shutdown().await;
}

#[tokio::test]
async fn stock_corrupted_by_hand_is_not_conserved() {
    let mut app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    app.stock(a, 10).await;
    app.stock(b, 10).await;
    app.reserve(&[(a, 2), (b, 2)]).await;
    outbox_drained(&app).await;
    // a: counts still add up, but 3 units are reserved where the reservations hold 2.
    sqlx::query(
        "UPDATE stock SET reserved = reserved + 1, available = available - 1 WHERE product_id = $1",
    )
    .bind(a)
    .execute(&app.db)
    .await
    .unwrap();
    // b: the counts no longer add up (the schema's CHECK dropped first to let it happen).
    sqlx::query("ALTER TABLE stock DROP CONSTRAINT stock_conserved")
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("UPDATE stock SET on_hand = on_hand + 5 WHERE product_id = $1")
        .bind(b)
        .execute(&app.db)
        .await
        .unwrap();
    let found = violations(&targets(&app), None).await;
    let mut products = vec![
        (format!("product {a}"), "reserved 3"),
        (format!("product {b}"), "on_hand 15"),
    ];
    products.sort_unstable();
    assert_eq!(found.len(), 2, "{found:#?}");
    for (violation, (subject, detail)) in found.iter().zip(&products) {
        assert_eq!(violation.kind, Kind::StockNotConserved);
        assert_eq!(&violation.subject, subject);
        assert!(violation.detail.contains(detail), "{violation:?}");
    }

    // A reservation flipped to RELEASED without giving its units back.
    let mut app2 = spawn_app().await;
    app2.stock(a, 10).await;
    let flipped = app2.reserve(&[(a, 4)]).await;
    outbox_drained(&app2).await;
    sqlx::query("UPDATE reservations SET status = 'released' WHERE id = $1::uuid")
        .bind(&flipped.reservation_id)
        .execute(&app2.db)
        .await
        .unwrap();
    let found = violations(&targets(&app2), None).await;
    assert_eq!(kinds(&found), [Kind::StockNotConserved], "{found:#?}");
    assert!(
        found[0]
            .detail
            .contains("reserved 4, RESERVED reservations hold 0")
    );
    app2.shutdown().await;
    app.shutdown().await;
}

/// Orders' state as if orders had placed `orders` at `at`, last changed then.
fn orders_state(orders: &[(&str, OrderStatus)], at: OffsetDateTime) -> OrdersState {
    OrdersState {
        orders: orders
            .iter()
            .map(|(id, status)| Order {
                order_id: (*id).to_owned(),
                customer_id: Uuid::new_v4().to_string(),
                status: *status,
                reservation_id: String::new(),
                payment_id: String::new(),
                total: Money {
                    units: 1,
                    nanos: 0,
                    currency_code: "EUR".into(),
                },
                lines: vec![],
                created_at: at,
                updated_at: at,
            })
            .collect(),
        sagas: Sagas::default(),
        outbox: OutboxState::default(),
    }
}

#[tokio::test]
async fn a_reservation_left_reserved_by_a_cancelled_order_is_found() {
    let mut app = spawn_app().await;
    let product = Uuid::new_v4();
    app.stock(product, 10).await;
    let held = app.reserve(&[(product, 2)]).await;
    outbox_drained(&app).await;
    let an_hour_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let orders = orders_state(&[(&held.order_id, OrderStatus::Cancelled)], an_hour_ago);
    let found = violations(&targets(&app), Some(orders)).await;
    assert_eq!(
        kinds(&found),
        [Kind::ReservationHeldByTerminalOrder],
        "{found:#?}"
    );
    assert_eq!(
        found[0].subject,
        format!("reservation {}", held.reservation_id)
    );
    app.shutdown().await;
}

#[tokio::test]
async fn events_not_applied_and_dead_letters_are_found() {
    let mut app = spawn_app().await;
    let product = Uuid::new_v4();
    app.stock(product, 10).await;
    app.reserve(&[(product, 1)]).await;
    outbox_drained(&app).await;
    // A durable consumer of inventory's events that never acknowledges one.
    let events = app.js.get_stream("SHOP_INVENTORY").await.unwrap();
    events
        .create_consumer(consumer::pull::Config {
            durable_name: Some("stalled".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    // A dead letter.
    app.js
        .get_or_create_stream(stream::Config {
            name: "SHOP_DLQ".into(),
            subjects: vec!["shop.dlq.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    app.js
        .publish("shop.dlq.someone.shop.inventory.x", "poison".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // An outbox row the relay parked.
    sqlx::query(
        "INSERT INTO outbox_dead_letters (id, event_id, subject, event_type, headers, payload, \
         created_at, attempts, error) VALUES (999999, $1, 'shop.inventory.x', 'x', '{}', '', \
         now(), 5, 'refused')",
    )
    .bind(Uuid::new_v4())
    .execute(&app.db)
    .await
    .unwrap();

    let found = violations(&targets(&app), None).await;
    let got: Vec<_> = found.iter().map(|v| (v.kind, v.subject.as_str())).collect();
    assert_eq!(
        got,
        [
            (Kind::EventNotApplied, "consumer SHOP_INVENTORY/stalled"),
            (Kind::DeadLetter, "outbox of inventory"),
            (Kind::DeadLetter, "stream SHOP_DLQ"),
        ],
        "{found:#?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn events_left_in_the_outbox_are_found() {
    let mut app = spawn_app().await;
    let product = Uuid::new_v4();
    app.stock(product, 10).await;
    app.nats.stop().await.unwrap();
    // Written with its StockReserved; the relay cannot publish it.
    app.reserve(&[(product, 1)]).await;
    let inventory_only = Targets {
        inventory: Some(app.admin_addr),
        ..Targets::default()
    };
    let found = violations(&inventory_only, None).await;
    assert_eq!(kinds(&found), [Kind::EventUnpublished], "{found:#?}");
    assert_eq!(found[0].subject, "outbox of inventory");
    app.nats.restart().await.unwrap();
    app.shutdown().await;
}
