//! The orders service: customers' orders behind `shop.orders.v1.OrderService`, event-sourced,
//! with a read model (CQRS), driven to CONFIRMED or CANCELLED by a durable saga.
//!
//! - **Event sourcing**: an order is its stream of events in `order_events` (append-only,
//!   versions without gaps, `(order_id, version)` unique: optimistic concurrency). Every
//!   command folds the stream into the order's state and is decided against it
//!   ([`domain`]).
//! - **CQRS**: GetOrder and ListOrders read the `orders` table, written from the folded state
//!   in the transaction that appends the events; `orders-projection rebuild` (or
//!   [`rebuild_read_model`]) recomputes it from the events and reports what differed.
//! - **The saga** (`saga`): reserve stock → authorize → capture → commit stock → confirm on
//!   `shop_saga`, every call idempotent by `<order_id>:<step>`, compensated in reverse on
//!   failure. PlaceOrder writes `Placed`, the read model row, the `OrderPlaced` outbox row and
//!   the saga run in one transaction.
//! - **Choreography**: shipment events from shipping (through the inbox) move confirmed orders
//!   to SHIPPED and DELIVERED (`consumers`).
//! - **WatchOrder** streams every state from the current one on (`watch`).
//!
//! # Layout
//! - `config`: settings. `clients`: catalog, inventory and payments clients.
//! - `domain`: events, the fold, decisions; no I/O.
//! - `store`: PostgreSQL; the only module with SQL.
//! - `saga`: the order and undo sagas' steps.
//! - `grpc`: the tonic service. `convert`: domain ↔ protobuf and the published events.
//! - `consumers`: shipment events. `watch`: change notifications for WatchOrder.
//! - `admin`: `/admin/state` and saga timelines. `error`: the one mapping to `tonic::Status`.

mod admin;
mod clients;
pub mod config;
mod consumers;
mod convert;
pub mod domain;
mod error;
mod grpc;
mod saga;
mod store;
mod watch;

use std::{future::Future, net::SocketAddr, time::Duration};

use shop_events::inbox::{self, InboxRetention};
use shop_proto::orders::order_service_server::OrderServiceServer;
use shop_runtime::{CancellationToken, GrpcServer, GrpcServerBuilder, RuntimeError, db};
use shop_saga::{SagaMetrics, Worker, WorkerConfig};

pub use clients::ClientsError;
pub use config::{Config, DependenciesConfig, SagaConfig};
pub use consumers::DURABLE as CONSUMER_DURABLE;
pub use error::OrdersError;
pub use saga::{ORDER_SAGA, UNDO_SAGA};
pub use store::RebuildReport;

/// The migrations of the orders database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The shared libraries' tables in the orders database (inbox, outbox, saga runs), migrated
/// before [`MIGRATOR`].
pub const LIBRARY_MIGRATORS: &[&sqlx::migrate::Migrator] = &[
    &shop_events::inbox::MIGRATOR,
    &shop_outbox::MIGRATOR,
    &shop_saga::MIGRATOR,
];

/// Rebuilds the read model of the database at `pool` from its events (see
/// `orders-projection`).
pub async fn rebuild_read_model(pool: &sqlx::PgPool) -> Result<RebuildReport, OrdersError> {
    store::PgOrderStore::new(pool.clone())
        .rebuild_read_model()
        .await
}

/// A bound orders service with its saga workers, consumer and outbox relay ready to start.
pub struct App {
    server: GrpcServer,
    pool: sqlx::PgPool,
    store: store::PgOrderStore,
    js: async_nats::jetstream::Context,
    replicas: usize,
    outbox_metrics: shop_outbox::RelayMetrics,
    consumer_metrics: shop_events::ConsumerMetrics,
    saga_metrics: SagaMetrics,
    steps: saga::Steps,
    saga_config: SagaConfig,
    worker: WorkerConfig,
    feed: watch::ChangeFeed,
    inbox_retention: InboxRetention,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Why the orders service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The service kit failed (configuration, listeners, database, migrations).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// NATS could not be set up.
    #[error(transparent)]
    Events(#[from] shop_events::EventsError),
    /// A dependency's client could not be built.
    #[error(transparent)]
    Clients(#[from] ClientsError),
}

impl App {
    /// Checks the settings, connects the database (running migrations if configured), NATS and
    /// the dependencies (lazily), and binds the listeners.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let worker = config.saga.worker()?;
        let inbox_retention = config.inbox_retention(&consumers::source_streams())?;
        let pool = db::connect_lazy(&config.database)?;
        if config.database.migrate_on_start {
            db::migrate_with(&pool, &MIGRATOR, LIBRARY_MIGRATORS, Duration::from_secs(30)).await?;
        }
        let js = shop_events::connect(&config.nats.nats_url, "orders").await?;
        let store = store::PgOrderStore::new(pool.clone());
        let max_message = config.server.max_message_bytes;
        let outbox_metrics = shop_outbox::RelayMetrics::default();
        let saga_metrics = SagaMetrics::default();
        let builder = GrpcServerBuilder::new(config.server, shop_proto::FILE_DESCRIPTOR_SET);
        let consumer_metrics = shop_events::ConsumerMetrics::default();
        builder.metrics().with_registry(|registry| {
            outbox_metrics.register(registry);
            consumer_metrics.register(registry);
            saga_metrics.register(registry);
        });
        let clients = clients::Clients::connect(&config.dependencies, &builder).await?;
        let feed = watch::ChangeFeed::default();
        let service = grpc::OrdersGrpc::new(
            store.clone(),
            clients.clone(),
            feed.clone(),
            builder.stopping(),
        );
        let server = builder
            .add_service(
                OrderServiceServer::new(service)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .admin_routes(admin::routes(store.clone()))
            .readiness_check(db::PgReadiness::new(pool.clone()))
            // Orders are recorded with the database alone: events wait in the outbox.
            .reported_check(shop_events::NatsReadiness::new(js.client()))
            .bind()
            .await?;
        Ok(Self {
            server,
            pool,
            steps: saga::Steps::new(clients, store.clone()),
            store,
            js,
            replicas: config.nats.nats_stream_replicas,
            outbox_metrics,
            consumer_metrics,
            saga_metrics,
            saga_config: config.saga,
            worker,
            feed,
            inbox_retention,
        })
    }

    /// Where gRPC is served.
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.server.grpc_addr()
    }

    /// Where the admin HTTP server listens.
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.server.admin_addr()
    }

    /// Serves, drives sagas, consumes shipment events, relays the outbox and purges the inbox
    /// until `shutdown` resolves, then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let stop = CancellationToken::new();
        let order_worker = Worker::try_new(
            self.pool.clone(),
            self.steps.order_saga(self.saga_config.retry()),
            self.worker.clone(),
        )
        .map_err(|e| RuntimeError::Config(e.to_string()))?
        .with_metrics(self.saga_metrics.clone());
        let undo_worker = Worker::try_new(
            self.pool.clone(),
            self.steps.undo_saga(self.saga_config.retry().max_backoff),
            WorkerConfig {
                owner: format!("{}-undo", self.worker.owner),
                ..self.worker.clone()
            },
        )
        .map_err(|e| RuntimeError::Config(e.to_string()))?
        .with_metrics(self.saga_metrics);
        let orders = spawn_worker(ORDER_SAGA, order_worker, stop.clone());
        let undo = spawn_worker(UNDO_SAGA, undo_worker, stop.clone());
        let consumer = consumers::spawn(
            &self.js,
            &self.store,
            self.replicas,
            &self.consumer_metrics,
            &stop,
        );
        let relay = tokio::spawn(shop_runtime::outbox::relay_outbox(
            "orders",
            self.js,
            self.pool.clone(),
            self.replicas,
            self.outbox_metrics,
            stop.clone(),
        ));
        let feed = tokio::spawn(self.feed.run(self.pool.clone(), stop.clone()));
        let purge = tokio::spawn(inbox::purge_until(
            self.pool,
            vec![consumers::inbox()],
            self.inbox_retention,
            stop.clone().cancelled_owned(),
        ));
        self.server
            .run_with_background(
                shutdown,
                stop,
                vec![orders, undo, consumer, relay, feed, purge],
            )
            .await
    }
}

/// Runs a saga worker until `stop`; an error ends it (logged).
fn spawn_worker<D>(
    kind: &'static str,
    worker: Worker<D>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    D: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = worker.run(stop).await {
            tracing::error!(%error, saga = kind, "saga worker stopped");
        }
    })
}
