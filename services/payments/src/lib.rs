//! The payments service: payment intents against an external card processor and their
//! append-only ledger, behind `shop.payments.v1.PaymentService`.
//!
//! Amounts are integer minor units of one currency per payment; captured and refunded amounts
//! are sums of ledger entries. Every mutating call is idempotent by its key, and the processor
//! is called with that same key through the kit's resilient client (deadline, retries,
//! breaker), so a retry at any level moves money once.
//!
//! # Layout
//! - `config`: settings, the processor's address and call policy among them.
//! - `domain`: amounts and the payment state machine, no I/O.
//! - `processor`: the [`PaymentProcessor`] trait and its gRPC client.
//! - `service`: idempotency, processor calls, reconciliation of unknown outcomes.
//! - `store`: PostgreSQL (sqlx); the only module with SQL.
//! - `convert`: domain to protobuf.
//! - `grpc`: the tonic service.
//! - `error`: the one mapping from [`PaymentsError`] to `tonic::Status`.
//! - `events`: the events this service publishes and the outbox relay that carries them.
//! - `admin`: `GET /admin/state` on the admin port (payments, ledger counts, outbox) for
//!   `meshctl check`.

mod admin;
pub mod config;
mod convert;
mod domain;
mod error;
pub mod events;
mod grpc;
pub mod processor;
mod service;
mod store;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use shop_proto::payments::payment_service_server::PaymentServiceServer;
use shop_runtime::{
    CancellationToken, GrpcServer, GrpcServerBuilder, RuntimeError,
    client::{self, BadTarget, DependencyConfig},
    db,
};

pub use config::{Config, ProcessorConfig};
pub use error::PaymentsError;
pub use processor::PaymentProcessor;

/// The migrations of the payments database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Name of the processor dependency in logs and `/metrics`.
pub const PROCESSOR_DEPENDENCY: &str = "payment-processor";

/// The shared libraries' tables in the payments database, migrated before [`MIGRATOR`].
pub const LIBRARY_MIGRATORS: &[&sqlx::migrate::Migrator] = &[&shop_outbox::MIGRATOR];

/// A bound payments service and its outbox relay.
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

/// Why the payments service could not start.
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
    /// The processor address is malformed.
    #[error(transparent)]
    ProcessorTarget(#[from] BadTarget),
}

/// The client policy for the processor: every method takes an idempotency key, so the contract
/// marks each `IDEMPOTENT` (or `NO_SIDE_EFFECTS`) and `client::dependency` retries them; each attempt has its own timeout so a hung call is retried within the
/// call's deadline.
pub fn processor_dependency(config: &ProcessorConfig) -> Result<DependencyConfig, BadTarget> {
    let mut dependency =
        client::dependency(PROCESSOR_DEPENDENCY, "payments", &config.processor_url)?;
    dependency.timeout = Some(config.timeout());
    dependency.endpoint.attempt_timeout = Some(config.attempt_timeout());
    dependency.retry.max_attempts = config.processor_max_attempts;
    dependency.breaker.consecutive_failures = config.processor_breaker_failures;
    dependency.breaker.open_timeout = config.breaker_open();
    Ok(dependency)
}

impl App {
    /// Connects the database (running migrations if configured), NATS and the processor
    /// (lazily), and binds the listeners.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let pool = db::connect_lazy(&config.database)?;
        if config.database.migrate_on_start {
            db::migrate_with(&pool, &MIGRATOR, LIBRARY_MIGRATORS, Duration::from_secs(30)).await?;
        }
        let js = shop_events::connect(&config.nats.nats_url, "payments").await?;
        let max_message = config.server.max_message_bytes;
        // shop_outbox_parked / shop_outbox_unpublished on /metrics, kept fresh by the relay.
        let outbox_metrics = shop_outbox::RelayMetrics::default();
        let builder = GrpcServerBuilder::new(config.server, shop_proto::FILE_DESCRIPTOR_SET);
        builder
            .metrics()
            .with_registry(|registry| outbox_metrics.register(registry));
        let dependency = processor_dependency(&config.processor)?;
        let channel = builder.connect(&dependency).await?;
        let processor = Arc::new(processor::GrpcProcessor::new(channel));
        let store = store::PgPaymentStore::new(pool.clone());
        let payments = service::Payments::new(store.clone(), processor);
        let server = builder
            .add_service(
                PaymentServiceServer::new(grpc::PaymentsGrpc::new(payments))
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .admin_routes(admin::routes(store))
            .readiness_check(db::PgReadiness::new(pool.clone()))
            // Payment writes only need the database: events wait in the outbox through an outage.
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
            "payments",
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
