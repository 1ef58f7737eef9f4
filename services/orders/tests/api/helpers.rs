//! `Mesh::start()`: every service the order flow touches, in-process on free ports, over one
//! PostgreSQL (a database each) and one nats-server: the payment processor, catalog,
//! inventory, payments, shipping and orders. Clients for each, and the books every test
//! checks at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use orders::{Config, DependenciesConfig, SagaConfig};
use shop_proto::{
    catalog::{CreateProductRequest, catalog_service_client::CatalogServiceClient},
    common::{Money, PostalAddress},
    inventory::{
        AdjustStockRequest, GetStockRequest, Stock,
        inventory_service_client::InventoryServiceClient,
    },
    orders::{
        CartLine, GetOrderRequest, Order, OrderStatus, PlaceOrderRequest, WatchOrderRequest,
        order_service_client::OrderServiceClient,
    },
    payments::{GetPaymentRequest, Payment, payment_service_client::PaymentServiceClient},
    processor::{
        Behavior, Decision, ListOperationsRequest, OperationKind, OperationResult,
        SetBehaviorRequest, processor_admin_service_client::ProcessorAdminServiceClient,
    },
};
use shop_runtime::{DatabaseConfig, LogFormat, NatsConfig, ServerConfig, TelemetryConfig};
use shop_testkit::{Nats, Postgres};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

type Task = JoinHandle<Result<(), shop_runtime::RuntimeError>>;

/// Settings of the orders service under test, and whether it runs in this process.
pub struct MeshOptions {
    pub saga: SagaConfig,
    /// Start orders in-process (else the test starts it, e.g. as a child process).
    pub orders_in_process: bool,
    /// Start notifications too (it consumes orders' and shipping's events).
    pub notifications: bool,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            saga: fast_saga(),
            orders_in_process: true,
            notifications: false,
        }
    }
}

/// Short backoffs so that retries show quickly.
pub fn fast_saga() -> SagaConfig {
    SagaConfig {
        saga_worker_name: "orders".into(),
        saga_batch: 64,
        saga_lease_secs: 10.0,
        saga_step_timeout_secs: 5.0,
        saga_poll_ms: 200,
        // Spans 2 to 3.5 s: longer than the breakers' open period below (1 s).
        saga_max_attempts: 8,
        saga_base_backoff_ms: 50,
        saga_max_backoff_ms: 1000,
    }
}

pub struct Mesh {
    /// Kept so the server lives as long as the test.
    _postgres: Postgres,
    pub nats: Nats,
    pub orders_db: String,
    pub orders_pool: sqlx::PgPool,
    pub inventory_pool: sqlx::PgPool,
    pub payments_pool: sqlx::PgPool,
    pub catalog: CatalogServiceClient<Channel>,
    pub inventory: InventoryServiceClient<Channel>,
    pub payments: PaymentServiceClient<Channel>,
    pub processor: ProcessorAdminServiceClient<Channel>,
    /// Where orders' dependencies listen, for an orders started by the test.
    pub dependencies: DependenciesConfig,
    /// Admin ports of inventory, payments and shipping (`/admin/state`).
    admins: [SocketAddr; 3],
    orders: Option<(OrderServiceClient<Channel>, SocketAddr)>,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<Task>,
}

fn serve<F>(run: impl FnOnce(oneshot::Receiver<()>) -> F) -> (oneshot::Sender<()>, Task)
where
    F: Future<Output = Result<(), shop_runtime::RuntimeError>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    (stop, tokio::spawn(run(stopped)))
}

fn telemetry() -> TelemetryConfig {
    TelemetryConfig {
        log_format: LogFormat::Text,
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects")
}

impl Mesh {
    pub async fn start() -> Self {
        Self::start_with(MeshOptions::default()).await
    }

    pub async fn start_with(options: MeshOptions) -> Self {
        // Seven services' start-up futures in one: boxed, so the tests' futures stay small.
        Box::pin(Self::start_boxed(options)).await
    }

    async fn start_boxed(options: MeshOptions) -> Self {
        let postgres = Postgres::start().await.expect("postgres starts");
        let nats = Nats::start().await.expect("nats starts");
        let mut stops = Vec::new();
        let mut tasks = Vec::new();

        let processor = payment_processor::App::build(payment_processor::Config {
            server: ServerConfig::ephemeral(),
            telemetry: telemetry(),
            behavior: payment_processor::BehaviorConfig::default(),
        })
        .await
        .expect("processor builds");
        let processor_addr = processor.grpc_addr();
        let (stop, task) = serve(|stopped| {
            processor.run_until(async {
                let _ = stopped.await;
            })
        });
        stops.push(stop);
        tasks.push(task);

        let catalog_db = postgres.create_database("catalog").await.expect("db");
        let catalog = catalog::App::build(catalog::Config {
            server: ServerConfig::ephemeral(),
            database: DatabaseConfig::new(&catalog_db),
            nats: NatsConfig::new(nats.url()),
            telemetry: telemetry(),
        })
        .await
        .expect("catalog builds");
        let catalog_addr = catalog.grpc_addr();
        let (stop, task) = serve(|stopped| {
            catalog.run_until(async {
                let _ = stopped.await;
            })
        });
        stops.push(stop);
        tasks.push(task);

        let inventory_db = postgres.create_database("inventory").await.expect("db");
        let inventory = inventory::App::build(inventory::Config {
            server: ServerConfig::ephemeral(),
            database: DatabaseConfig::new(&inventory_db),
            nats: NatsConfig::new(nats.url()),
            telemetry: telemetry(),
            stock: inventory::StockConfig::default(),
        })
        .await
        .expect("inventory builds");
        let (inventory_addr, inventory_admin) = (inventory.grpc_addr(), inventory.admin_addr());
        let (stop, task) = serve(|stopped| {
            inventory.run_until(async {
                let _ = stopped.await;
            })
        });
        stops.push(stop);
        tasks.push(task);

        let payments_db = postgres.create_database("payments").await.expect("db");
        let payments = payments::App::build(payments::Config {
            server: ServerConfig::ephemeral(),
            database: DatabaseConfig::new(&payments_db),
            nats: NatsConfig::new(nats.url()),
            telemetry: telemetry(),
            processor: payments::ProcessorConfig {
                processor_timeout_ms: 1500,
                processor_attempt_timeout_ms: 400,
                processor_max_attempts: 3,
                processor_breaker_failures: 5,
                processor_breaker_open_ms: 1000,
                ..payments::ProcessorConfig::new(format!("http://{processor_addr}"))
            },
        })
        .await
        .expect("payments builds");
        let (payments_addr, payments_admin) = (payments.grpc_addr(), payments.admin_addr());
        let (stop, task) = serve(|stopped| {
            payments.run_until(async {
                let _ = stopped.await;
            })
        });
        stops.push(stop);
        tasks.push(task);

        let shipping_db = postgres.create_database("shipping").await.expect("db");
        let shipping = shipping::App::build(shipping::Config {
            server: ServerConfig::ephemeral(),
            database: DatabaseConfig::new(&shipping_db),
            nats: NatsConfig::new(nats.url()),
            telemetry: telemetry(),
            delivery: shipping::DeliveryConfig {
                pickup_delay_secs: 0.3,
                delivery_delay_secs: 0.3,
                sweep_interval_ms: 100,
                ..shipping::DeliveryConfig::default()
            },
            inbox: shipping::InboxConfig::default(),
        })
        .await
        .expect("shipping builds");
        let shipping_admin = shipping.admin_addr();
        let (stop, task) = serve(|stopped| {
            shipping.run_until(async {
                let _ = stopped.await;
            })
        });
        stops.push(stop);
        tasks.push(task);

        if options.notifications {
            let notifications_db = postgres.create_database("notifications").await.expect("db");
            let notifications = notifications::App::build(notifications::Config {
                server: ServerConfig::ephemeral(),
                database: DatabaseConfig::new(&notifications_db),
                nats: NatsConfig::new(nats.url()),
                inbox: notifications::InboxConfig::default(),
                telemetry: telemetry(),
            })
            .await
            .expect("notifications builds");
            let (stop, task) = serve(|stopped| {
                notifications.run_until(async {
                    let _ = stopped.await;
                })
            });
            stops.push(stop);
            tasks.push(task);
        }

        let orders_db = postgres.create_database("orders").await.expect("db");
        let dependencies = DependenciesConfig {
            payments_timeout_ms: 4000,
            breaker_open_ms: 1000,
            ..DependenciesConfig::new(
                format!("http://{catalog_addr}"),
                format!("http://{inventory_addr}"),
                format!("http://{payments_addr}"),
            )
        };
        let mut mesh = Self {
            orders_pool: sqlx::PgPool::connect(&orders_db).await.expect("db"),
            inventory_pool: sqlx::PgPool::connect(&inventory_db).await.expect("db"),
            payments_pool: sqlx::PgPool::connect(&payments_db).await.expect("db"),
            orders_db,
            _postgres: postgres,
            nats,
            catalog: CatalogServiceClient::new(connect(catalog_addr).await),
            inventory: InventoryServiceClient::new(connect(inventory_addr).await),
            payments: PaymentServiceClient::new(connect(payments_addr).await),
            processor: ProcessorAdminServiceClient::new(connect(processor_addr).await),
            dependencies,
            admins: [inventory_admin, payments_admin, shipping_admin],
            orders: None,
            stops,
            tasks,
        };
        if options.orders_in_process {
            mesh.start_orders(options.saga).await;
        }
        mesh
    }

    /// The orders service's config for this mesh.
    pub fn orders_config(&self, saga: SagaConfig) -> Config {
        Config {
            server: ServerConfig::ephemeral(),
            database: DatabaseConfig::new(&self.orders_db),
            nats: NatsConfig::new(self.nats.url()),
            telemetry: telemetry(),
            dependencies: self.dependencies.clone(),
            saga,
            inbox_retention_secs: 8.0 * 24.0 * 3600.0,
        }
    }

    async fn start_orders(&mut self, saga: SagaConfig) {
        let app = orders::App::build(self.orders_config(saga))
            .await
            .expect("orders builds");
        let (addr, admin) = (app.grpc_addr(), app.admin_addr());
        let (stop, task) = serve(|stopped| {
            app.run_until(async {
                let _ = stopped.await;
            })
        });
        self.stops.push(stop);
        self.tasks.push(task);
        self.orders = Some((OrderServiceClient::new(connect(addr).await), admin));
    }

    /// Uses an orders service the test started.
    pub async fn use_orders(&mut self, grpc: SocketAddr, admin: SocketAddr) {
        self.orders = Some((OrderServiceClient::new(connect(grpc).await), admin));
    }

    pub fn orders(&self) -> OrderServiceClient<Channel> {
        self.orders.as_ref().expect("orders is running").0.clone()
    }

    /// Shipping's admin port.
    pub fn shipping_admin(&self) -> SocketAddr {
        self.admins[2]
    }

    /// Payments' admin port (`/metrics`, `/admin/state`).
    pub fn payments_admin(&self) -> SocketAddr {
        self.admins[1]
    }

    pub fn orders_admin(&self) -> SocketAddr {
        self.orders.as_ref().expect("orders is running").1
    }

    /// `GET path` on orders' admin port, as JSON.
    pub async fn admin_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (code, body) = shop_testkit::http_get(self.orders_admin(), path)
            .await
            .expect("admin get");
        (
            code,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A product priced `units.cents` EUR with `stock` units on hand.
    pub async fn product(&mut self, units: i64, cents: i32, stock: i64) -> String {
        let sku = format!("SKU-{}", uuid::Uuid::now_v7().simple());
        let product = self
            .catalog
            .create_product(CreateProductRequest {
                sku: sku.chars().take(40).collect(),
                name: "Mug".into(),
                description: String::new(),
                category: "kitchen".into(),
                price: Some(eur(units, cents)),
                ..Default::default()
            })
            .await
            .expect("create product")
            .into_inner()
            .product
            .expect("product");
        if stock > 0 {
            self.inventory
                .adjust_stock(AdjustStockRequest {
                    product_id: product.product_id.clone(),
                    delta: stock,
                    reason: "goods received".into(),
                    idempotency_key: format!("seed-{}", product.product_id),
                })
                .await
                .expect("stock");
        }
        product.product_id
    }

    pub async fn stock(&mut self, product_id: &str) -> Stock {
        self.inventory
            .get_stock(GetStockRequest {
                product_id: product_id.into(),
            })
            .await
            .expect("get stock")
            .into_inner()
            .stock
            .expect("stock")
    }

    pub async fn place(&self, lines: &[(&str, i32)], token: &str) -> Order {
        self.orders()
            .place_order(place_request(&uuid(), &uuid(), lines, token))
            .await
            .expect("place order")
            .into_inner()
            .order
            .expect("order")
    }

    pub async fn get(&self, order_id: &str) -> Order {
        self.orders()
            .get_order(GetOrderRequest {
                order_id: order_id.into(),
            })
            .await
            .expect("get order")
            .into_inner()
            .order
            .expect("order")
    }

    /// Waits until the order's read model shows `status` (for CONFIRMED: or a later status of
    /// a confirmed order, SHIPPED or DELIVERED, as shipping may be quick).
    pub async fn wait_status(
        &self,
        order_id: &str,
        status: OrderStatus,
        within: Duration,
    ) -> Order {
        let deadline = tokio::time::Instant::now() + within;
        let confirmed = [
            OrderStatus::Confirmed as i32,
            OrderStatus::Shipped as i32,
            OrderStatus::Delivered as i32,
        ];
        loop {
            let order = self.get(order_id).await;
            if order.status == status as i32
                || (status == OrderStatus::Confirmed && confirmed.contains(&order.status))
            {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {order_id} is {:?} ({}), expected {status:?} within {within:?}",
                OrderStatus::try_from(order.status),
                order.cancellation_detail
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every state WatchOrder sends until the stream ends.
    pub async fn watch(&self, order_id: &str, within: Duration) -> Vec<Order> {
        let mut stream = self
            .orders()
            .watch_order(WatchOrderRequest {
                order_id: order_id.into(),
            })
            .await
            .expect("watch")
            .into_inner();
        let mut seen = Vec::new();
        tokio::time::timeout(within, async {
            while let Some(message) = stream.message().await.expect("watch message") {
                seen.push(message.order.expect("order"));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("watch did not end within {within:?}: saw {seen:?}"));
        seen
    }

    pub async fn payment(&mut self, payment_id: &str) -> Payment {
        self.payments
            .get_payment(GetPaymentRequest {
                payment_id: payment_id.into(),
            })
            .await
            .expect("get payment")
            .into_inner()
            .payment
            .expect("payment")
    }

    pub async fn set_behavior(&mut self, latency: Duration, failure_rate: f64, hard_down: bool) {
        let defaults = payment_processor::BehaviorConfig::default()
            .behavior()
            .expect("defaults");
        self.processor
            .set_behavior(SetBehaviorRequest {
                behavior: Some(Behavior {
                    latency: prost_types::Duration::try_from(latency).ok(),
                    failure_rate,
                    hard_down,
                    decline_tokens: defaults.decline_tokens.into_iter().collect(),
                }),
            })
            .await
            .expect("set behavior");
    }

    pub async fn operations(&mut self) -> Vec<OperationResult> {
        self.processor
            .list_operations(ListOperationsRequest {})
            .await
            .expect("operations")
            .into_inner()
            .operations
    }

    /// Approved processor operations of `kind` whose key starts with `order_id`.
    pub async fn approved(&mut self, order_id: &str, kind: OperationKind) -> usize {
        self.operations()
            .await
            .iter()
            .filter(|op| {
                op.kind == kind as i32
                    && op.decision == Decision::Approved as i32
                    && op.idempotency_key.contains(order_id)
            })
            .count()
    }

    /// Saga runs by (kind, status).
    pub async fn saga_runs(&self) -> BTreeMap<(String, String), i64> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT kind, status, count(*) FROM saga_runs GROUP BY kind, status")
                .fetch_all(&self.orders_pool)
                .await
                .expect("saga runs");
        rows.into_iter().map(|(k, s, n)| ((k, s), n)).collect()
    }

    /// The books balance: every payment's ledger agrees with its state (payments' own check),
    /// no reservation is held by a finished order, and every order saga has finished.
    pub async fn check_books(&mut self) {
        let held: Vec<(uuid::Uuid,)> =
            sqlx::query_as("SELECT order_id FROM reservations WHERE status = 'reserved'")
                .fetch_all(&self.inventory_pool)
                .await
                .expect("reservations");
        for (order_id,) in held {
            let order = self.get(&order_id.to_string()).await;
            assert_eq!(
                order.status,
                OrderStatus::Pending as i32,
                "order {order_id} is finished but holds a reservation"
            );
        }
        let unsettled: Vec<(String, String)> = sqlx::query_as(
            "SELECT order_id::text, status FROM payments WHERE status = 'authorized'",
        )
        .fetch_all(&self.payments_pool)
        .await
        .expect("payments");
        for (order_id, _) in unsettled {
            let order = self.get(&order_id).await;
            assert_eq!(
                order.status,
                OrderStatus::Pending as i32,
                "order {order_id} is finished but its payment is still only authorized"
            );
        }
        let violations = self.violations().await;
        assert!(
            violations.is_empty(),
            "the invariant checker found {violations:?}"
        );
    }

    /// Runs the mesh's invariant checker (`shop_invariants`, what `meshctl check` runs) with
    /// no grace period, until it reports nothing (events in flight settle) or 15 s have passed;
    /// the violations it still reports then.
    pub async fn violations(&self) -> Vec<shop_invariants::Violation> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let found = self.check_once().await;
            if found.is_empty() || tokio::time::Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One run of the invariant checker, no grace period.
    pub async fn check_once(&self) -> Vec<shop_invariants::Violation> {
        let targets = shop_invariants::Targets {
            orders: self.orders.as_ref().map(|(_, admin)| *admin),
            inventory: Some(self.admins[0]),
            payments: Some(self.admins[1]),
            shipping: Some(self.admins[2]),
            nats_url: Some(self.nats.url()),
            ..shop_invariants::Targets::default()
        };
        let state = shop_invariants::collect(&targets).await.expect("collect");
        shop_invariants::check(&state, Duration::ZERO, time::OffsetDateTime::now_utc())
    }

    pub async fn finish(mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..).rev() {
            task.await.expect("task").expect("stops cleanly");
        }
    }
}

pub fn eur(units: i64, cents: i32) -> Money {
    Money {
        units,
        nanos: cents * 10_000_000,
        currency_code: "EUR".into(),
    }
}

pub fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn address() -> PostalAddress {
    PostalAddress {
        recipient_name: "Ada Lovelace".into(),
        line1: "12 St James's Square".into(),
        line2: String::new(),
        city: "London".into(),
        region: String::new(),
        postal_code: "SW1Y 4JH".into(),
        country_code: "GB".into(),
    }
}

pub fn place_request(
    key: &str,
    customer_id: &str,
    lines: &[(&str, i32)],
    token: &str,
) -> PlaceOrderRequest {
    PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: customer_id.into(),
        lines: lines
            .iter()
            .map(|(product_id, quantity)| CartLine {
                product_id: (*product_id).into(),
                quantity: *quantity,
            })
            .collect(),
        shipping_address: Some(address()),
        payment_method_token: token.into(),
    }
}

/// The statuses of a sequence of orders, repeats collapsed.
pub fn statuses(orders: &[Order]) -> Vec<OrderStatus> {
    let mut out: Vec<OrderStatus> = Vec::new();
    for order in orders {
        let status = OrderStatus::try_from(order.status).expect("known status");
        if out.last() != Some(&status) {
            out.push(status);
        }
    }
    out
}

/// The fields named by the `BadRequest` detail of `status`.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .bad_request()
        .map(|br| {
            br.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}
