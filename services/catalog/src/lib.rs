//! The catalog service: products, their prices and categories, behind
//! `shop.catalog.v1.CatalogService`.
//!
//! # Layout
//! - `config`: settings.
//! - `domain`: products and money, no I/O.
//! - `store`: PostgreSQL (sqlx); the only module with SQL.
//! - `grpc`: the tonic service and protobuf <-> domain mapping.
//! - `error`: the one mapping from [`CatalogError`] to `tonic::Status`.
//! - `events`: subjects of the events this service publishes.
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
use shop_runtime::{GrpcServer, GrpcServerBuilder, RuntimeError, db};

pub use config::Config;
pub use error::CatalogError;

/// The migrations of the catalog database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A bound catalog service.
#[derive(Debug)]
pub struct App {
    server: GrpcServer,
}

impl App {
    /// Connects the database (running migrations if configured) and binds the listeners.
    pub async fn build(config: Config) -> Result<Self, RuntimeError> {
        let pool = db::connect_lazy(&config.database)?;
        if config.database.migrate_on_start {
            db::migrate(&pool, &MIGRATOR, Duration::from_secs(30)).await?;
        }
        let service = grpc::CatalogGrpc::new(store::PgProductStore::new(pool.clone()));
        let max_message = config.server.max_message_bytes;
        let server = GrpcServerBuilder::new(config.server, shop_proto::FILE_DESCRIPTOR_SET)
            .add_service(
                CatalogServiceServer::new(service)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .readiness_check(db::PgReadiness::new(pool))
            .bind()
            .await?;
        Ok(Self { server })
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

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        self.server.run_until(shutdown).await
    }
}
