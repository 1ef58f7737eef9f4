//! `/metrics` as Prometheus scrapes it, parsed as OpenMetrics text: the RPC counters of server
//! and client move with an order, shipping's consumer counts what it handled, the payments service's breaker to the processor opens when
//! the processor fails and closes after, and the orders outbox backlog rises while NATS is down
//! and drains once it is back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shop_proto::orders::OrderStatus;

use crate::helpers::Mesh;

/// Samples of one exposition: `(name, labels)` → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses the OpenMetrics text format strictly enough to catch a broken exposition: comment
/// lines are `# HELP|TYPE|UNIT name ...`, the last line is `# EOF`, every other line is
/// `name{label="value",...} number`, optionally followed by an exemplar (` # {...} number`).
fn parse_openmetrics(text: &str) -> Samples {
    let mut samples = Samples::new();
    let mut lines = text.lines().peekable();
    let mut saw_eof = false;
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            assert!(lines.peek().is_none(), "# EOF is the last line");
            saw_eof = true;
            break;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap_or_default();
            assert!(
                ["HELP", "TYPE", "UNIT"].contains(&kind),
                "comment line: {line}"
            );
            continue;
        }
        // An exemplar follows ` # ` on a bucket or counter line: `... 3 # {trace_id="…"} 0.2`.
        let sample = line.split_once(" # ").map_or(line, |(sample, exemplar)| {
            assert!(exemplar.starts_with('{'), "exemplar: {line}");
            sample
        });
        let (series, value) = sample
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("labels: {line}"));
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("label: {line}"));
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name: {line}"
        );
        samples.insert((name.to_owned(), labels), value);
    }
    assert!(saw_eof, "no # EOF");
    samples
}

async fn scrape(admin: SocketAddr) -> Samples {
    let (status, body) = shop_testkit::http_get(admin, "/metrics")
        .await
        .expect("scrape");
    assert_eq!(status, 200);
    parse_openmetrics(&body)
}

/// The sum of `name`'s samples whose labels include `labels`.
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn wait_for(admin: SocketAddr, what: &str, holds: impl Fn(&Samples) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let samples = scrape(admin).await;
        if holds(&samples) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {samples:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn rpc_counters_breaker_state_and_outbox_backlog_show_in_metrics() {
    let mut mesh = Mesh::start().await;
    let (orders, payments) = (mesh.orders_admin(), mesh.payments_admin());
    let place_ok = [("grpc_method", "PlaceOrder"), ("grpc_code", "Ok")];
    let before = scrape(orders).await;
    let placed_before = value(&before, "shop_grpc_server_handled_total", &place_ok);

    let mug = mesh.product(20, 0, 50).await;
    let order = mesh.place(&[(&mug, 1)], "tok_visa").await;
    mesh.wait_status(
        &order.order_id,
        OrderStatus::Confirmed,
        Duration::from_secs(20),
    )
    .await;
    let after = scrape(orders).await;
    assert_eq!(
        value(&after, "shop_grpc_server_handled_total", &place_ok),
        placed_before + 1.0
    );
    assert!(
        value(
            &after,
            "shop_grpc_server_handling_seconds_count",
            &[("grpc_method", "PlaceOrder")]
        ) >= 1.0
    );
    let catalog_ok = [
        ("dependency", "catalog"),
        ("grpc_method", "BatchGetProducts"),
        ("grpc_code", "Ok"),
    ];
    assert!(value(&after, "shop_grpc_client_handled_total", &catalog_ok) >= 1.0);
    assert!(
        value(
            &after,
            "shop_grpc_client_handled_total",
            &[("dependency", "payments"), ("grpc_method", "Capture")]
        ) >= 1.0
    );
    // Shipping consumed the confirmation; its consumer's counters and backlog show.
    wait_for(mesh.shipping_admin(), "shipping's consumer counters", |s| {
        value(s, "shop_events_handled_total", &[("outcome", "ack")]) >= 1.0
            && s.keys()
                .any(|(name, _)| name == "shop_events_consumer_pending")
    })
    .await;

    // The processor fails: payments' breaker to it opens, and closes once it answers again.
    let open = [("dependency", "payment-processor"), ("state", "open")];
    let closed = [("dependency", "payment-processor"), ("state", "closed")];
    assert_eq!(
        value(
            &scrape(payments).await,
            "shop_client_breaker_state",
            &closed
        ),
        1.0
    );
    mesh.set_behavior(Duration::ZERO, 0.0, true).await;
    let failing = mesh.place(&[(&mug, 1)], "tok_visa").await;
    wait_for(payments, "the breaker to open", |s| {
        value(s, "shop_client_breaker_state", &open) == 1.0
    })
    .await;
    // Retried before it opened (the processor's methods are idempotent), refused locally
    // while it is open.
    wait_for(payments, "retries and local rejections", |s| {
        value(
            s,
            "shop_grpc_client_retries_total",
            &[("dependency", "payment-processor")],
        ) >= 1.0
            && value(
                s,
                "shop_grpc_client_rejected_total",
                &[
                    ("dependency", "payment-processor"),
                    ("reason", "circuit_open"),
                ],
            ) >= 1.0
    })
    .await;
    mesh.set_behavior(Duration::ZERO, 0.0, false).await;
    wait_for(payments, "the breaker to close", |s| {
        value(s, "shop_client_breaker_state", &closed) == 1.0
    })
    .await;
    mesh.wait_status(
        &failing.order_id,
        OrderStatus::Confirmed,
        Duration::from_secs(30),
    )
    .await;

    // NATS down: orders' events wait in its outbox, and show; back up, they drain.
    mesh.nats.stop().await.expect("nats stops");
    let waiting = mesh.place(&[(&mug, 1)], "tok_visa").await;
    wait_for(orders, "a backlog", |s| {
        value(s, "shop_outbox_unpublished", &[]) >= 1.0
    })
    .await;
    wait_for(orders, "the backlog to age", |s| {
        value(s, "shop_outbox_oldest_unpublished_age_seconds", &[]) > 0.0
    })
    .await;
    mesh.nats.restart().await.expect("nats restarts");
    wait_for(orders, "the backlog to drain", |s| {
        value(s, "shop_outbox_unpublished", &[]) == 0.0
            && value(s, "shop_outbox_oldest_unpublished_age_seconds", &[]) == 0.0
    })
    .await;
    mesh.wait_status(
        &waiting.order_id,
        OrderStatus::Confirmed,
        Duration::from_secs(30),
    )
    .await;
    mesh.finish().await;
}
