//! The catalog service: products, their prices and categories, behind
//! `shop.catalog.v1.CatalogService`.
//!
//! # Layout
//! - `config`: settings.
//! - `domain`: products and money, no I/O.
//! - `store`: PostgreSQL (sqlx); the only module with SQL.
//! - `grpc`: the tonic service and protobuf <-> domain mapping.
//! - `error`: the one mapping from [`CatalogError`] to `tonic::Status`.
//! - `events`: the events this service publishes and the outbox relay that carries them.
//!
//! [`App::build`] starts everything on the configured (or ephemeral) ports, so tests run the
//! real service in-process.

pub mod config;
mod domain;
mod error;
pub mod events;
mod grpc;
mod store;

use std::{future::Future, net::SocketAddr, time::Duration};

use shop_proto::catalog::catalog_service_server::CatalogServiceServer;
use shop_runtime::{CancellationToken, GrpcServer, GrpcServerBuilder, RuntimeError, db};

pub use config::Config;
pub use error::CatalogError;

/// The migrations of the catalog database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The shared libraries' tables in the catalog database, migrated before [`MIGRATOR`].
pub const LIBRARY_MIGRATORS: &[&sqlx::migrate::Migrator] = &[&shop_outbox::MIGRATOR];

/// A bound catalog service and its outbox relay.
pub struct App {
    server: GrpcServer,
    pool: sqlx::PgPool,
    js: async_nats::jetstream::Context,
    replicas: usize,
    outbox_metrics: shop_outbox::RelayMetrics,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Why the catalog service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The service kit failed (listeners, database, migrations).
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
    /// Connects the database (running migrations if configured) and NATS, and binds the
    /// listeners.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let pool = db::connect_lazy(&config.database)?;
        if config.database.migrate_on_start {
            db::migrate_with(&pool, &MIGRATOR, LIBRARY_MIGRATORS, Duration::from_secs(30)).await?;
        }
        let js = shop_events::connect(&config.nats.nats_url, "catalog").await?;
        let service = grpc::CatalogGrpc::new(store::PgProductStore::new(pool.clone()));
        let max_message = config.server.max_message_bytes;
        // shop_outbox_parked / shop_outbox_unpublished on /metrics, kept fresh by the relay.
        let outbox_metrics = shop_outbox::RelayMetrics::default();
        let builder = GrpcServerBuilder::new(config.server, shop_proto::FILE_DESCRIPTOR_SET);
        builder
            .metrics()
            .with_registry(|registry| outbox_metrics.register(registry));
        let server = builder
            .add_service(
                CatalogServiceServer::new(service)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .readiness_check(db::PgReadiness::new(pool.clone()))
            // UpdatePrice writes ProductPriceChanged to the outbox; no RPC needs NATS itself.
            .reported_check(shop_events::NatsReadiness::new(js.client()))
            .bind()
            .await?;
        Ok(Self {
            server,
            pool,
            js,
            replicas: config.nats.nats_stream_replicas,
            outbox_metrics,
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

    /// Serves and relays the outbox until `shutdown` resolves, then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let stop = CancellationToken::new();
        let relay = tokio::spawn(shop_runtime::outbox::relay_outbox(
            "catalog",
            self.js,
            self.pool,
            self.replicas,
            self.outbox_metrics,
            stop.clone(),
        ));
        self.server
            .run_with_background(shutdown, stop, vec![relay])
            .await
    }
}
