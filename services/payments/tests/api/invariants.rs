//! The invariant checker (`shop_invariants`) on the real service, with orders' state made by
//! hand: payments that agree with their orders pass; a second capture injected into the
//! ledger, and money kept for a cancelled order, are found.

use std::time::Duration;

use shop_invariants::types::{Money, Order, OrderStatus, OrdersState, OutboxState, Sagas};
use shop_invariants::{Kind, Targets, Violation, check, collect};
use shop_testkit::wait_until;
use time::OffsetDateTime;

use crate::admin_state::three_payments;
use crate::helpers::{TestApp, capture_request, eur, spawn_app};

/// Orders' state as if its orders had settled an hour ago.
fn orders_state(orders: &[(&str, OrderStatus)]) -> OrdersState {
    let an_hour_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
    OrdersState {
        orders: orders
            .iter()
            .map(|(id, status)| Order {
                order_id: (*id).to_owned(),
                customer_id: "customer".into(),
                status: *status,
                reservation_id: String::new(),
                payment_id: String::new(),
                total: Money {
                    units: 1,
                    nanos: 0,
                    currency_code: "EUR".into(),
                },
                lines: vec![],
                created_at: an_hour_ago,
                updated_at: an_hour_ago,
            })
            .collect(),
        sagas: Sagas::default(),
        outbox: OutboxState::default(),
    }
}

/// Payments' state, collected once its outbox is empty, checked with `orders` and no grace.
async fn violations(app: &TestApp, orders: OrdersState) -> Vec<Violation> {
    let pool = app.pool.clone();
    wait_until(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == 0)
        }
    })
    .await
    .unwrap();
    let targets = Targets {
        payments: Some(app.admin_addr),
        nats_url: Some(app.nats.url()),
        ..Targets::default()
    };
    let mut state = collect(&targets).await.unwrap();
    state.orders = Some(orders);
    check(&state, Duration::ZERO, OffsetDateTime::now_utc())
}

#[tokio::test]
async fn the_checker_finds_extra_captures_and_money_kept_for_cancelled_orders() {
    let mut app = spawn_app().await;
    let [captured, voided, refunded] = three_payments(&mut app).await;
    let mut orders = vec![
        (captured.order_id.as_str(), OrderStatus::Confirmed),
        (voided.order_id.as_str(), OrderStatus::Cancelled),
        // Cancelled after its confirmation and refunded in full: fine.
        (refunded.order_id.as_str(), OrderStatus::Cancelled),
    ];
    let found = violations(&app, orders_state(&orders)).await;
    assert!(found.is_empty(), "{found:#?}");

    // Captured, and its order cancelled without a refund.
    let kept = app.authorize("d:authorize", eur(5, 0)).await;
    app.client
        .capture(capture_request("d:capture", &kept, eur(5, 0)))
        .await
        .unwrap();
    orders.push((kept.order_id.as_str(), OrderStatus::Cancelled));
    // A second capture of the confirmed order's payment, written behind the API.
    sqlx::query(
        "INSERT INTO ledger_entries (payment_id, kind, amount_minor, currency, idempotency_key) \
         VALUES ($1::uuid, 'capture', 100, 'EUR', 'by-hand')",
    )
    .bind(&captured.payment_id)
    .execute(&app.pool)
    .await
    .unwrap();

    let found = violations(&app, orders_state(&orders)).await;
    let got: Vec<_> = found.iter().map(|v| (v.kind, v.subject.clone())).collect();
    assert_eq!(
        got,
        [
            (
                Kind::CaptureWithoutConfirmedOrder,
                format!("payment {}", kept.payment_id)
            ),
            (
                Kind::ConfirmedOrderCaptures,
                format!("order {}", captured.order_id)
            ),
        ],
        "{found:#?}"
    );
    assert!(
        found[1].detail.contains("2 captures"),
        "{}",
        found[1].detail
    );
    // The ledger was broken on purpose: stop without checking the books.
    app.stop().await;
}
