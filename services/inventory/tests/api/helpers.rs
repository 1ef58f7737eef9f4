//! `spawn_app()`: an inventory service on port 0 with a fresh database and its own
//! nats-server; its client; the conservation check; reading what reached JetStream.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use inventory::{App, Config, StockConfig};
use shop_proto::inventory::{
    AdjustStockRequest, Reservation, ReserveRequest, Stock, StockLine,
    inventory_service_client::InventoryServiceClient,
};
use shop_runtime::{DatabaseConfig, LogFormat, NatsConfig, ServerConfig, TelemetryConfig};
use shop_testkit::{Nats, Postgres, wait_until};
use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use uuid::Uuid;

pub struct TestApp {
    pub client: InventoryServiceClient<Channel>,
    pub channel: Channel,
    pub admin_addr: std::net::SocketAddr,
    /// A direct connection to the service's database, for checks behind the API.
    pub db: PgPool,
    pub js: jetstream::Context,
    _postgres: Postgres,
    pub nats: Nats,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), shop_runtime::RuntimeError>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A service whose config `tweak` adjusts (TTL, threshold, limits) before it builds.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let postgres = Postgres::start().await.expect("postgres starts");
    let database_url = postgres.fresh_database().await.expect("fresh database");
    let nats = Nats::start().await.expect("nats starts");
    let mut config = Config {
        server: ServerConfig::ephemeral(),
        database: DatabaseConfig::new(&database_url),
        nats: NatsConfig::new(nats.url()),
        telemetry: TelemetryConfig {
            log_format: LogFormat::Text,
        },
        stock: StockConfig::default(),
    };
    tweak(&mut config);
    let app = App::build(config).await.expect("inventory builds");
    let addr = app.grpc_addr();
    let admin_addr = app.admin_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects");
    let db = PgPool::connect(&database_url).await.expect("test pool");
    let js = shop_events::connect(&nats.url(), "inventory-test")
        .await
        .expect("nats connects");
    TestApp {
        client: InventoryServiceClient::new(channel.clone()),
        channel,
        admin_addr,
        db,
        js,
        _postgres: postgres,
        nats,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    /// Stops the service and waits for it to drain.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }

    /// Adds `units` on hand of `product` under a fresh idempotency key.
    pub async fn stock(&mut self, product: Uuid, units: i64) -> Stock {
        self.client
            .adjust_stock(AdjustStockRequest {
                product_id: product.to_string(),
                delta: units,
                reason: "goods received".into(),
                idempotency_key: Uuid::new_v4().to_string(),
            })
            .await
            .expect("adjust_stock")
            .into_inner()
            .stock
            .expect("stock in response")
    }

    pub async fn get_stock(&mut self, product: Uuid) -> Stock {
        self.client
            .get_stock(shop_proto::inventory::GetStockRequest {
                product_id: product.to_string(),
            })
            .await
            .expect("get_stock")
            .into_inner()
            .stock
            .expect("stock in response")
    }

    /// Reserves `lines` under a fresh reservation id.
    pub async fn reserve(&mut self, lines: &[(Uuid, i32)]) -> Reservation {
        self.client
            .reserve(reserve_request(Uuid::new_v4(), Uuid::new_v4(), lines))
            .await
            .expect("reserve")
            .into_inner()
            .reservation
            .expect("reservation in response")
    }

    /// Every event published on `subject` so far, decoded, in stream order. Waits first until
    /// the outbox has nothing left to publish, so nothing committed is missed.
    pub async fn published<E: prost::Message + Default>(&self, subject: &str) -> Vec<E> {
        let db = self.db.clone();
        wait_until(Duration::from_secs(20), || {
            let db = db.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL",
                )
                .fetch_one(&db)
                .await
                .is_ok_and(|n| n == 0)
            }
        })
        .await
        .expect("outbox drained");
        let Ok(stream) = self.js.get_stream("SHOP_INVENTORY").await else {
            return Vec::new();
        };
        let mut consumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: subject.to_owned(),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("consumer");
        let pending = consumer.info().await.expect("consumer info").num_pending;
        if pending == 0 {
            return Vec::new();
        }
        let mut messages = consumer
            .batch()
            .max_messages(usize::try_from(pending).expect("small"))
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .expect("batch");
        let mut events = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.expect("message");
            events.push(E::decode(message.payload.clone()).expect("event decodes"));
        }
        events
    }
}

pub fn reserve_request(id: Uuid, order: Uuid, lines: &[(Uuid, i32)]) -> ReserveRequest {
    ReserveRequest {
        reservation_id: id.to_string(),
        order_id: order.to_string(),
        lines: lines
            .iter()
            .map(|(product, quantity)| StockLine {
                product_id: product.to_string(),
                quantity: *quantity,
            })
            .collect(),
    }
}

/// Server limits for the contention tests. All their tasks share one channel, hence one
/// caller (peer IP) for the per-caller rate limit: its burst of 200 would shed some of the 200
/// concurrent calls before they reach the database, and these tests are about the database
/// serialising them, not about admission control (which has its own tests). For the same
/// reason the concurrency limit goes above the number of tasks. The pool grows from 10 to 50
/// connections: a call waits at most 5 s for a pooled connection (the kit's acquire timeout,
/// then UNAVAILABLE), and on a loaded CI machine 200 calls queued behind one hot row can wait
/// longer than that; with more connections they wait on the row lock in PostgreSQL instead,
/// bounded by the call's deadline, which is the contention these tests are about.
pub fn unthrottled(config: &mut Config) {
    config.server.rate_limit_per_second = 0;
    config.server.max_concurrent_requests = 1024;
    config.database.database_max_connections = 50;
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

/// The `ErrorInfo` reason and `status` metadata of `status`, if any.
pub fn error_info(status: &tonic::Status) -> Option<(String, String)> {
    use tonic_types::StatusExt as _;
    let details = status.get_error_details();
    let info = details.error_info()?;
    Some((
        info.reason.clone(),
        info.metadata.get("status").cloned().unwrap_or_default(),
    ))
}

/// The stock invariants, checked in the database: every row has
/// on_hand = available + reserved + committed and nothing negative; `reserved` is what open
/// reservations hold and `committed` what committed ones hold; `on_hand` is the sum of the
/// adjustments. Each violation is listed with its product.
pub async fn assert_conserved(db: &PgPool) {
    let violations: Vec<(Uuid, String)> = sqlx::query_as(
        "WITH held AS ( \
             SELECT l.product_id, \
                    sum(l.quantity) FILTER (WHERE r.status = 'reserved') AS reserved, \
                    sum(l.quantity) FILTER (WHERE r.status = 'committed') AS committed \
             FROM reservation_lines l JOIN reservations r ON r.id = l.reservation_id \
             GROUP BY l.product_id), \
         adjusted AS ( \
             SELECT product_id, sum(delta) AS on_hand FROM stock_adjustments GROUP BY product_id) \
         SELECT s.product_id, concat_ws(', ', \
             CASE WHEN s.on_hand <> s.available + s.reserved + s.committed \
                  THEN 'on_hand <> available + reserved + committed' END, \
             CASE WHEN least(s.on_hand, s.available, s.reserved, s.committed) < 0 \
                  THEN 'negative count' END, \
             CASE WHEN s.reserved <> coalesce(h.reserved, 0) \
                  THEN format('reserved %s, open reservations hold %s', s.reserved, coalesce(h.reserved, 0)) END, \
             CASE WHEN s.committed <> coalesce(h.committed, 0) \
                  THEN format('committed %s, committed reservations hold %s', s.committed, coalesce(h.committed, 0)) END, \
             CASE WHEN s.on_hand <> coalesce(a.on_hand, 0) \
                  THEN format('on_hand %s, adjustments sum to %s', s.on_hand, coalesce(a.on_hand, 0)) END) \
         FROM stock s LEFT JOIN held h USING (product_id) LEFT JOIN adjusted a USING (product_id) \
         WHERE s.on_hand <> s.available + s.reserved + s.committed \
            OR least(s.on_hand, s.available, s.reserved, s.committed) < 0 \
            OR s.reserved <> coalesce(h.reserved, 0) \
            OR s.committed <> coalesce(h.committed, 0) \
            OR s.on_hand <> coalesce(a.on_hand, 0)",
    )
    .fetch_all(db)
    .await
    .expect("conservation query");
    assert!(violations.is_empty(), "stock not conserved: {violations:?}");
}
