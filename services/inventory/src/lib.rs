//! The inventory service: stock levels per product and reservations of stock for orders,
//! behind `shop.inventory.v1.InventoryService`.
//!
//! Each product's stock is `on_hand = available + reserved + committed`, none negative; the
//! schema's CHECK constraints hold that, and transactions that lock rows in one order (see
//! `store`) keep concurrent reservations from overselling or deadlocking. Reserve, Release,
//! Commit and AdjustStock are idempotent by their ids and keys. Reservations left open past
//! `RESERVATION_TTL_SECS` are released by a background sweeper. Events leave through the
//! transactional outbox.
//!
//! # Layout
//! - `config`: settings.
//! - `domain`: stock and reservation types and the rules that need no I/O.
//! - `store`: PostgreSQL (sqlx); the only module with SQL, and its locking discipline.
//! - `grpc`: the tonic service and protobuf <-> domain mapping.
//! - `error`: the one mapping from [`InventoryError`] to `tonic::Status`.
//! - `events`: the events this service publishes and the outbox relay that carries them.
//! - `sweeper`: releases expired reservations.
//! - `admin`: `GET /admin/state` on the admin port (stock, reservations, outbox) for
//!   `meshctl check`.

mod admin;
pub mod config;
mod domain;
mod error;
pub mod events;
mod grpc;
mod store;
mod sweeper;

use std::{future::Future, net::SocketAddr, time::Duration};

use shop_proto::inventory::inventory_service_server::InventoryServiceServer;
use shop_runtime::{CancellationToken, GrpcServer, GrpcServerBuilder, RuntimeError, db};

pub use config::{Config, StockConfig};
pub use error::InventoryError;

/// The migrations of the inventory database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The shared libraries' tables in the inventory database, migrated before [`MIGRATOR`].
pub const LIBRARY_MIGRATORS: &[&sqlx::migrate::Migrator] = &[&shop_outbox::MIGRATOR];

/// A bound inventory service with its outbox relay and sweeper.
pub struct App {
    server: GrpcServer,
    pool: sqlx::PgPool,
    store: store::PgInventoryStore,
    js: async_nats::jetstream::Context,
    replicas: usize,
    outbox_metrics: shop_outbox::RelayMetrics,
    sweep_interval: Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Why the inventory service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The service kit failed (configuration, listeners, database, migrations).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The outbox table could not be created.
    #[error(transparent)]
    Outbox(#[from] shop_outbox::OutboxError),
    /// NATS could not be set up.
    #[error(transparent)]
    Events(#[from] shop_events::EventsError),
}

impl App {
    /// Checks the settings, connects the database (running migrations if configured) and
    /// NATS, and binds the listeners.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        config.stock.validate()?;
        let pool = db::connect_lazy(&config.database)?;
        if config.database.migrate_on_start {
            db::migrate_with(&pool, &MIGRATOR, LIBRARY_MIGRATORS, Duration::from_secs(30)).await?;
        }
        let js = shop_events::connect(&config.nats.nats_url, "inventory").await?;
        let store = store::PgInventoryStore::new(pool.clone(), config.stock.low_stock_threshold);
        let service = grpc::InventoryGrpc::new(store.clone(), config.stock.reservation_ttl_secs);
        let max_message = config.server.max_message_bytes;
        // shop_outbox_parked / shop_outbox_unpublished on /metrics, kept fresh by the relay.
        let outbox_metrics = shop_outbox::RelayMetrics::default();
        let builder = GrpcServerBuilder::new(config.server, shop_proto::FILE_DESCRIPTOR_SET);
        builder
            .metrics()
            .with_registry(|registry| outbox_metrics.register(registry));
        let server = builder
            .add_service(
                InventoryServiceServer::new(service)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .admin_routes(admin::routes(store.clone()))
            .readiness_check(db::PgReadiness::new(pool.clone()))
            // Reserve, Release and Commit only write the outbox: a NATS outage delays events,
            // it must not take stock out of service.
            .reported_check(shop_events::NatsReadiness::new(js.client()))
            .bind()
            .await?;
        Ok(Self {
            server,
            pool,
            store,
            js,
            replicas: config.nats.nats_stream_replicas,
            outbox_metrics,
            sweep_interval: config.stock.sweep_interval(),
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

    /// Serves, relays the outbox and sweeps expired reservations until `shutdown` resolves,
    /// then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let stop = CancellationToken::new();
        let relay = tokio::spawn(shop_runtime::outbox::relay_outbox(
            "inventory",
            self.js,
            self.pool,
            self.replicas,
            self.outbox_metrics,
            stop.clone(),
        ));
        let sweeper = tokio::spawn(sweeper::run(self.store, self.sweep_interval, stop.clone()));
        self.server
            .run_with_background(shutdown, stop, vec![relay, sweeper])
            .await
    }
}
