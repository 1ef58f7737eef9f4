//! The order driver: PlaceOrder at a fixed offered rate, each order followed to its outcome.
//!
//! Open loop: an order is started every `1/rate` seconds whether or not earlier ones have
//! finished (a closed loop would slow down with the mesh and hide its queueing), up to
//! `max_in_flight` at once; a start that finds that many in flight is counted as shed, not
//! queued. Each order is then watched (WatchOrder) until it is CONFIRMED (or later) or
//! CANCELLED.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meshctl::state::MeshChannel;
use shop_proto::catalog::{CreateProductRequest, catalog_service_client::CatalogServiceClient};
use shop_proto::common::{Money, PostalAddress};
use shop_proto::inventory::{AdjustStockRequest, inventory_service_client::InventoryServiceClient};
use shop_proto::orders::{
    CartLine, OrderStatus, PlaceOrderRequest, WatchOrderRequest,
    order_service_client::OrderServiceClient,
};
use tokio::sync::Mutex;
use uuid::Uuid;

/// Units of stock each benchmark product gets: more than any run orders.
const STOCK: i64 = 100_000_000;

/// How long an order may take to settle before it counts as timed out.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Products the orders draw from.
#[derive(Debug, Clone)]
pub struct Products(Vec<String>);

/// How one order ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// CONFIRMED (or later), this long after PlaceOrder was sent.
    Confirmed(Duration),
    /// CANCELLED.
    Cancelled,
    /// PlaceOrder or WatchOrder failed.
    Failed,
    /// Not settled within [`SETTLE_TIMEOUT`].
    TimedOut,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct FlowResult {
    /// Orders started.
    pub started: usize,
    /// Starts skipped because `max_in_flight` orders were in flight.
    pub shed: usize,
    /// Time from the first start to the last order settling.
    pub elapsed: Duration,
    /// Each started order's outcome.
    pub outcomes: Vec<Outcome>,
    /// PlaceOrder latencies (the call alone).
    pub place_latencies: Vec<Duration>,
}

/// Creates `count` products with plenty of stock for a run tagged `tag`.
pub async fn seed(
    catalog: MeshChannel,
    inventory: MeshChannel,
    tag: &str,
    count: usize,
) -> anyhow::Result<Products> {
    let mut catalog = CatalogServiceClient::new(catalog);
    let mut inventory = InventoryServiceClient::new(inventory);
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let sku = format!("BENCH-{tag}-{n}");
        let product = catalog
            .create_product(CreateProductRequest {
                sku: sku.clone(),
                name: format!("Benchmark item {n}"),
                description: "Created by mesh-bench.".into(),
                category: "bench".into(),
                price: Some(Money {
                    units: 3,
                    nanos: 250_000_000,
                    currency_code: "EUR".into(),
                }),
                idempotency_key: format!("bench-{}", sku.to_lowercase()),
            })
            .await
            .context("CreateProduct")?
            .into_inner()
            .product
            .context("CreateProduct returned no product")?;
        inventory
            .adjust_stock(AdjustStockRequest {
                product_id: product.product_id.clone(),
                delta: STOCK,
                reason: "benchmark stock".into(),
                idempotency_key: format!("bench-stock-{}", product.product_id),
            })
            .await
            .context("AdjustStock")?;
        ids.push(product.product_id);
    }
    Ok(Products(ids))
}

/// Places orders at `rate` per second for `duration` and follows each to its outcome.
pub async fn run(
    orders: MeshChannel,
    customer: &str,
    products: &Products,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
) -> anyhow::Result<FlowResult> {
    anyhow::ensure!(rate > 0.0, "the rate must be positive");
    anyhow::ensure!(!products.0.is_empty(), "no products to order");
    let interval = Duration::from_secs_f64(1.0 / rate);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(FlowResult::default()));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    let mut n: usize = 0;
    while started.elapsed() < duration {
        ticker.tick().await;
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            results.lock().await.shed += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let product = products.0[n % products.0.len()].clone();
        n += 1;
        let (client, customer, in_flight, results) = (
            OrderServiceClient::new(orders.clone()),
            customer.to_owned(),
            Arc::clone(&in_flight),
            Arc::clone(&results),
        );
        tasks.push(tokio::spawn(async move {
            let (outcome, placed) = one_order(client, customer, product).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let mut results = results.lock().await;
            results.started += 1;
            results.outcomes.push(outcome);
            if let Some(placed) = placed {
                results.place_latencies.push(placed);
            }
        }));
    }
    for task in tasks {
        task.await.context("order task panicked")?;
    }
    let mut result = std::mem::take(&mut *results.lock().await);
    result.elapsed = started.elapsed();
    Ok(result)
}

/// Places one order of `product` and watches it settle.
async fn one_order(
    mut client: OrderServiceClient<MeshChannel>,
    customer_id: String,
    product: String,
) -> (Outcome, Option<Duration>) {
    let sent = Instant::now();
    let placed = client
        .place_order(PlaceOrderRequest {
            idempotency_key: Uuid::new_v4().to_string(),
            customer_id,
            lines: vec![CartLine {
                product_id: product,
                quantity: 1,
            }],
            shipping_address: Some(address()),
            payment_method_token: "tok_bench".into(),
        })
        .await;
    let order_id = match placed {
        Ok(response) => match response.into_inner().order {
            Some(order) => order.order_id,
            None => return (Outcome::Failed, None),
        },
        Err(_) => return (Outcome::Failed, None),
    };
    let place_latency = sent.elapsed();
    let watched = tokio::time::timeout(SETTLE_TIMEOUT, async {
        let mut stream = client
            .watch_order(WatchOrderRequest { order_id })
            .await?
            .into_inner();
        while let Some(message) = stream.message().await? {
            let status = message.order.map_or(0, |o| o.status);
            if status == OrderStatus::Confirmed as i32
                || status == OrderStatus::Shipped as i32
                || status == OrderStatus::Delivered as i32
            {
                return Ok(Outcome::Confirmed(sent.elapsed()));
            }
            if status == OrderStatus::Cancelled as i32 {
                return Ok(Outcome::Cancelled);
            }
        }
        Ok::<_, tonic::Status>(Outcome::Failed)
    })
    .await;
    let outcome = match watched {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Outcome::Failed,
        Err(_) => Outcome::TimedOut,
    };
    (outcome, Some(place_latency))
}

fn address() -> PostalAddress {
    PostalAddress {
        recipient_name: "Bench Mark".into(),
        line1: "1 Load Street".into(),
        line2: String::new(),
        city: "Berlin".into(),
        region: String::new(),
        postal_code: "10115".into(),
        country_code: "DE".into(),
    }
}
