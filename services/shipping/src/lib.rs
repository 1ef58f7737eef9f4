//! The shipping service: quotes deliveries and ships confirmed orders, behind
//! `shop.shipping.v1.ShippingService`.
//!
//! Shipments are created by choreography, never over gRPC: the service consumes
//! `OrderConfirmed` from `SHOP_ORDERS` through its inbox and schedules one shipment per order,
//! writing the shipment and `ShipmentScheduled` in one transaction (outbox). A simulated carrier
//! (the sweeper) picks it up after `SHIPPING_PICKUP_DELAY_SECS` and delivers it
//! `SHIPPING_DELIVERY_DELAY_SECS` later, publishing `ShipmentDelivered`; the schedule lives in
//! the database, so it survives restarts and is shared by replicas. `OrderCancelled`, or
//! `CancelShipment`, cancels a shipment not yet picked up (`ShipmentCancelled`).
//!
//! # Layout
//! - `config`: settings.
//! - `domain`: shipment types, the shipment's life, pricing; no I/O.
//! - `store`: PostgreSQL (sqlx); the only module with SQL, and its locking discipline.
//! - `consumers`: the durable consumer of order events and its handlers.
//! - `sweeper`: the simulated carrier that moves due shipments; forgetting old cancellations.
//! - `grpc`: the tonic service and protobuf <-> domain mapping.
//! - `error`: the one mapping from [`ShippingError`] to `tonic::Status`.
//! - `events`: the events this service publishes.
//! - `admin`: `GET /admin/state` on the admin port, for `meshctl check`.

mod admin;
pub mod config;
mod consumers;
mod domain;
mod error;
pub mod events;
mod grpc;
mod store;
mod sweeper;

use std::{future::Future, net::SocketAddr, time::Duration};

use shop_events::inbox::{self, InboxRetention};
use shop_proto::shipping::shipping_service_server::ShippingServiceServer;
use shop_runtime::{CancellationToken, GrpcServer, GrpcServerBuilder, RuntimeError, db};

pub use config::{Config, DeliveryConfig, InboxConfig};
pub use consumers::DURABLE as CONSUMER_DURABLE;
pub use error::ShippingError;

/// The migrations of the shipping database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The shared libraries' tables in the shipping database (inbox, outbox), migrated before
/// [`MIGRATOR`].
pub const LIBRARY_MIGRATORS: &[&sqlx::migrate::Migrator] =
    &[&shop_events::inbox::MIGRATOR, &shop_outbox::MIGRATOR];

/// A bound shipping service with its consumer, outbox relay and sweeper ready to start.
pub struct App {
    server: GrpcServer,
    pool: sqlx::PgPool,
    store: store::PgShippingStore,
    js: async_nats::jetstream::Context,
    replicas: usize,
    outbox_metrics: shop_outbox::RelayMetrics,
    consumer_metrics: shop_events::ConsumerMetrics,
    sweep_interval: Duration,
    consumer_concurrency: usize,
    inbox_retention: InboxRetention,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Why the shipping service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The service kit failed (configuration, listeners, database, migrations).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// NATS could not be set up.
    #[error(transparent)]
    Events(#[from] shop_events::EventsError),
}

impl App {
    /// Checks the settings, connects the database (running migrations if configured) and
    /// NATS, and binds the listeners.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        config.delivery.validate()?;
        let inbox_retention = config.inbox.retention(&consumers::source_streams())?;
        let pool = db::connect_lazy(&config.database)?;
        if config.database.migrate_on_start {
            db::migrate_with(&pool, &MIGRATOR, LIBRARY_MIGRATORS, Duration::from_secs(30)).await?;
        }
        let js = shop_events::connect(&config.nats.nats_url, "shipping").await?;
        let store = store::PgShippingStore::new(
            pool.clone(),
            config.delivery.pickup_delay_secs,
            config.delivery.delivery_delay_secs,
        );
        let service = grpc::ShippingGrpc::new(store.clone());
        let max_message = config.server.max_message_bytes;
        // shop_outbox_parked / shop_outbox_unpublished on /metrics, kept fresh by the relay.
        let outbox_metrics = shop_outbox::RelayMetrics::default();
        let builder = GrpcServerBuilder::new(config.server, shop_proto::FILE_DESCRIPTOR_SET);
        builder
            .metrics()
            .with_registry(|registry| outbox_metrics.register(registry));
        let consumer_metrics = shop_events::ConsumerMetrics::default();
        builder
            .metrics()
            .with_registry(|registry| consumer_metrics.register(registry));
        let server = builder
            .add_service(
                ShippingServiceServer::new(service)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .admin_routes(admin::routes(store.clone()))
            .readiness_check(db::PgReadiness::new(pool.clone()))
            // Quote, GetShipment and CancelShipment need only the database; a NATS outage
            // delays scheduling and events, it must not take shipping out of service.
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
            consumer_metrics,
            sweep_interval: config.delivery.sweep_interval(),
            consumer_concurrency: config.delivery.consumer_concurrency,
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

    /// Serves, consumes order events, relays the outbox, moves due shipments and purges old
    /// inbox entries and cancelled orders until `shutdown` resolves, then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let stop = CancellationToken::new();
        let consumer = consumers::spawn(
            &self.js,
            &self.store,
            self.replicas,
            self.consumer_concurrency,
            &self.consumer_metrics,
            &stop,
        );
        let relay = tokio::spawn(shop_runtime::outbox::relay_outbox(
            "shipping",
            self.js,
            self.pool.clone(),
            self.replicas,
            self.outbox_metrics,
            stop.clone(),
        ));
        let sweeper = tokio::spawn(sweeper::run(
            self.store.clone(),
            self.sweep_interval,
            stop.clone(),
        ));
        let forget = tokio::spawn(sweeper::purge_cancelled_orders(
            self.store,
            self.inbox_retention,
            stop.clone(),
        ));
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
                vec![consumer, relay, sweeper, purge, forget],
            )
            .await
    }
}
