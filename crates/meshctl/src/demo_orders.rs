//! The order part of `meshctl demo`: three orders through the saga, each watched until it
//! settles, then its saga's timeline from orders' admin port.
//!
//! - a mug paid with `tok_visa`: confirmed (then shipped and delivered, as shipping goes);
//! - a mug paid with `tok_decline`: cancelled, payment declined (the stock is released);
//! - more lamps than there are: cancelled, out of stock (nothing is charged).

use std::net::SocketAddr;
use std::time::Duration;

use crate::state::MeshChannel;
use futures::StreamExt as _;
use shop_proto::orders::{
    CancellationReason, GetOrderRequest, Order, OrderStatus, PlaceOrderRequest, WatchOrderRequest,
    order_service_client::OrderServiceClient,
};

use crate::admin::{self, Answer, Timeline};
use crate::error::{MeshError, Result};
use crate::seed::{self, Seeded};
use crate::state::MeshState;
use crate::{fixture, table};

/// How long one order may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a settled order's saga may take to record its last steps.
const TIMELINE_WAIT: Duration = Duration::from_secs(5);

/// How an order should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Confirmed, or further along (shipped, delivered).
    Confirmed,
    /// Cancelled for this reason.
    Cancelled(CancellationReason),
}

/// One order of the demo.
#[derive(Debug, Clone)]
struct Scenario {
    label: &'static str,
    request: PlaceOrderRequest,
    expected: Expected,
}

/// Places the three orders for `customer_id`, prints how each ended and its saga timeline;
/// fails when an order did not end as expected.
pub async fn run(
    state: &MeshState,
    customer_id: &str,
    token: &str,
    tag: &str,
    step: usize,
) -> Result<()> {
    let Some(orders_service) = state.service("orders") else {
        println!("{step}. no orders service in this mesh: skipped the orders");
        return Ok(());
    };
    let seeded = seed::seed(state).await?;
    let scenarios = scenarios(&seeded, customer_id, tag)?;
    let orders = OrderServiceClient::new(state.user_channel("orders", token)?);
    println!("{step}. three orders for customer {customer_id}:");
    let mut unexpected = Vec::new();
    for (index, scenario) in scenarios.into_iter().enumerate() {
        let letter = char::from(b'a' + u8::try_from(index).unwrap_or(0));
        let order = place_and_settle(orders.clone(), scenario.request.clone()).await?;
        let verdict = if meets(&order, scenario.expected) {
            "as expected"
        } else {
            unexpected.push(format!("{} ended {}", scenario.label, describe(&order)));
            "NOT AS EXPECTED"
        };
        println!(
            "   {letter}. {}: order {} {} ({verdict})",
            scenario.label,
            order.order_id,
            describe(&order)
        );
        let timeline = finished_timeline(orders_service.admin_addr, &order.order_id).await;
        print!("{}", indent(&render_timeline(&timeline), "      "));
    }
    if unexpected.is_empty() {
        Ok(())
    } else {
        Err(MeshError::UnexpectedOrders(unexpected.join("; ")))
    }
}

fn scenarios(seeded: &[Seeded], customer_id: &str, tag: &str) -> Result<Vec<Scenario>> {
    let find = |sku: &str| {
        seeded
            .iter()
            .find(|s| s.seed.sku == sku)
            .ok_or_else(|| MeshError::Usage(format!("{sku} was not seeded")))
    };
    let mug = find(seed::MUG.sku)?;
    let lamp = find(seed::LAMP.sku)?;
    let too_many = i32::try_from(lamp.stock.available + 1)
        .unwrap_or(i32::MAX)
        .min(1000);
    let order = |label: &str, product: &Seeded, quantity, token| {
        fixture::place_order_request(
            format!("meshctl-demo-{tag}-{label}"),
            customer_id,
            &product.product.product_id,
            quantity,
            token,
        )
    };
    Ok(vec![
        Scenario {
            label: "a mug paid with tok_visa",
            request: order("confirmed", mug, 1, "tok_visa"),
            expected: Expected::Confirmed,
        },
        Scenario {
            label: "a mug paid with tok_decline",
            request: order("declined", mug, 1, "tok_decline"),
            expected: Expected::Cancelled(CancellationReason::PaymentDeclined),
        },
        Scenario {
            label: "more lamps than in stock",
            request: order("out-of-stock", lamp, too_many, "tok_visa"),
            expected: Expected::Cancelled(CancellationReason::OutOfStock),
        },
    ])
}

/// Places the order and waits (`WatchOrder`, else polling `GetOrder`) until it is no longer
/// pending.
async fn place_and_settle(
    mut orders: OrderServiceClient<MeshChannel>,
    request: PlaceOrderRequest,
) -> Result<Order> {
    let placed = orders
        .place_order(request)
        .await
        .map_err(|s| MeshError::rpc("OrderService/PlaceOrder", s))?
        .into_inner()
        .order
        .unwrap_or_default();
    if is_settled(&placed) {
        return Ok(placed);
    }
    let order_id = placed.order_id.clone();
    match tokio::time::timeout(SETTLE_TIMEOUT, settle(&mut orders, &order_id)).await {
        Ok(settled) => settled,
        Err(_) => Err(MeshError::Timeout {
            what: format!("order {order_id} to leave PENDING"),
            after: SETTLE_TIMEOUT,
        }),
    }
}

async fn settle(orders: &mut OrderServiceClient<MeshChannel>, order_id: &str) -> Result<Order> {
    let watched = orders
        .watch_order(WatchOrderRequest {
            order_id: order_id.to_owned(),
        })
        .await;
    if let Ok(response) = watched {
        let mut updates = response.into_inner();
        while let Some(Ok(update)) = updates.next().await {
            if let Some(order) = update.order.filter(is_settled) {
                return Ok(order);
            }
        }
    }
    // The stream ended or broke before the order settled: ask until it has.
    let mut pause = Duration::from_millis(100);
    loop {
        let order = orders
            .get_order(GetOrderRequest {
                order_id: order_id.to_owned(),
            })
            .await
            .map_err(|s| MeshError::rpc("OrderService/GetOrder", s))?
            .into_inner()
            .order
            .unwrap_or_default();
        if is_settled(&order) {
            return Ok(order);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The saga's timeline once the saga finished (the order settles before its last
/// compensations are recorded), or as it is after [`TIMELINE_WAIT`].
async fn finished_timeline(admin: SocketAddr, order_id: &str) -> Answer<Timeline> {
    let deadline = tokio::time::Instant::now() + TIMELINE_WAIT;
    loop {
        let answer = admin::timeline(admin, order_id).await;
        let running = matches!(
            &answer,
            Answer::Served(t) if t.status == "running" || t.status == "compensating"
        );
        if !running || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the saga has decided: anything but pending.
fn is_settled(order: &Order) -> bool {
    !matches!(
        order.status(),
        OrderStatus::Pending | OrderStatus::Unspecified
    )
}

/// Whether `order` ended as `expected`.
#[must_use]
pub fn meets(order: &Order, expected: Expected) -> bool {
    match expected {
        Expected::Confirmed => matches!(
            order.status(),
            OrderStatus::Confirmed | OrderStatus::Shipped | OrderStatus::Delivered
        ),
        Expected::Cancelled(reason) => {
            order.status() == OrderStatus::Cancelled && order.cancellation_reason() == reason
        }
    }
}

/// `CONFIRMED`, or `CANCELLED (PAYMENT_DECLINED: detail)`.
fn describe(order: &Order) -> String {
    let status = order
        .status()
        .as_str_name()
        .trim_start_matches("ORDER_STATUS_");
    if order.status() != OrderStatus::Cancelled {
        return status.to_owned();
    }
    let reason = order
        .cancellation_reason()
        .as_str_name()
        .trim_start_matches("CANCELLATION_REASON_");
    if order.cancellation_detail.is_empty() {
        format!("{status} ({reason})")
    } else {
        format!("{status} ({reason}: {})", order.cancellation_detail)
    }
}

/// The saga's steps as a table: step, phase, outcome, attempt, duration, error.
fn render_timeline(answer: &Answer<Timeline>) -> String {
    let timeline = match answer {
        Answer::Served(timeline) => timeline,
        Answer::NotFound => return "no saga timeline for this order (404)\n".to_owned(),
        Answer::Failed(why) => return format!("saga timeline unavailable: {why}\n"),
    };
    let rows: Vec<Vec<String>> = timeline
        .steps
        .iter()
        .map(|s| {
            vec![
                s.step.clone(),
                s.phase.clone(),
                s.outcome.clone(),
                s.attempt.to_string(),
                format!("{:.1} ms", s.duration_ms),
                s.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    // The failure is the failed step's error; shown apart only when no step shows it.
    let failure = match timeline.failure.as_deref() {
        Some(why) if timeline.steps.iter().all(|s| s.error.is_none()) => format!(", {why}"),
        _ => String::new(),
    };
    let mut text = format!(
        "saga {} ({}{failure}):\n{}",
        timeline.saga_id,
        timeline.status,
        table::render(
            &["step", "phase", "outcome", "attempt", "duration", "error"],
            &rows
        )
    );
    if let Some(undo) = &timeline.undo {
        text.push_str("undone by ");
        text.push_str(&render_timeline(&Answer::Served((**undo).clone())));
    }
    text
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|line| format!("{prefix}{line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::TimelineStep;

    fn order(status: OrderStatus, reason: CancellationReason) -> Order {
        Order {
            order_id: "o".into(),
            status: status as i32,
            cancellation_reason: reason as i32,
            cancellation_detail: "card declined".into(),
            ..Order::default()
        }
    }

    #[test]
    fn expectations_are_met_only_by_the_right_ending() {
        let none = CancellationReason::Unspecified;
        let declined = CancellationReason::PaymentDeclined;
        assert!(meets(
            &order(OrderStatus::Confirmed, none),
            Expected::Confirmed
        ));
        assert!(meets(
            &order(OrderStatus::Delivered, none),
            Expected::Confirmed
        ));
        assert!(!meets(
            &order(OrderStatus::Pending, none),
            Expected::Confirmed
        ));
        assert!(meets(
            &order(OrderStatus::Cancelled, declined),
            Expected::Cancelled(declined)
        ));
        assert!(!meets(
            &order(OrderStatus::Cancelled, declined),
            Expected::Cancelled(CancellationReason::OutOfStock)
        ));
        assert!(!is_settled(&order(OrderStatus::Pending, none)));
        assert!(is_settled(&order(OrderStatus::Cancelled, declined)));
    }

    #[test]
    fn describes_cancellations_with_reason_and_detail() {
        let text = describe(&order(
            OrderStatus::Cancelled,
            CancellationReason::PaymentDeclined,
        ));
        assert_eq!(text, "CANCELLED (PAYMENT_DECLINED: card declined)");
        let confirmed = order(OrderStatus::Confirmed, CancellationReason::Unspecified);
        assert_eq!(describe(&confirmed), "CONFIRMED");
    }

    #[test]
    fn the_timeline_is_a_table_of_steps() {
        let timeline = Timeline {
            saga_id: "s".into(),
            status: "compensated".into(),
            failure: None,
            undo: None,
            steps: vec![TimelineStep {
                step: "authorize_payment".into(),
                phase: "action".into(),
                outcome: "failed".into(),
                error: Some("declined".into()),
                attempt: 1,
                duration_ms: 12.34,
            }],
        };
        let text = render_timeline(&Answer::Served(timeline));
        assert!(text.starts_with("saga s (compensated):\nstep"), "{text}");
        assert!(
            text.contains("authorize_payment  action  failed   1        12.3 ms   declined"),
            "{text}"
        );
        assert!(render_timeline(&Answer::NotFound).contains("404"));

        // The saga's failure is shown in the heading only when no step carries it.
        let failed_quietly = Timeline {
            saga_id: "t".into(),
            status: "stuck".into(),
            failure: Some("lease lost".into()),
            steps: Vec::new(),
            undo: None,
        };
        let text = render_timeline(&Answer::Served(failed_quietly));
        assert!(text.starts_with("saga t (stuck, lease lost):"), "{text}");
    }
}
