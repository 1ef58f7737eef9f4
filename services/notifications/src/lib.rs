//! The notifications service: turns domain events (UserRegistered, OrderConfirmed,
//! OrderCancelled, ShipmentScheduled) into notifications for users, and serves
//! `shop.notifications.v1.NotificationService` to list them and watch new ones arrive.
//!
//! Events arrive through durable JetStream consumers and are applied through the inbox in the
//! same transaction as the notification, so a redelivered event is acked without a second
//! notification. New notifications reach `WatchNotifications` streams on every replica through
//! `LISTEN/NOTIFY`.
//!
//! # Layout
//! - `config`: settings.
//! - `domain`: the text each event becomes; no I/O.
//! - `consumers`: the durable consumers and their handlers.
//! - `store`: PostgreSQL (sqlx); the only module with SQL.
//! - `fanout`: new notifications to local watchers.
//! - `grpc`: the tonic service.
//! - `error`: the one mapping from [`NotificationsError`] to `tonic::Status`.

pub mod config;
mod consumers;
mod domain;
mod error;
mod fanout;
mod grpc;
mod store;

use std::{future::Future, net::SocketAddr, time::Duration};

use shop_events::inbox::{self, InboxRetention};
use shop_proto::notifications::notification_service_server::NotificationServiceServer;
use shop_runtime::{CancellationToken, GrpcServer, GrpcServerBuilder, RuntimeError, db};
use tokio::sync::broadcast;

pub use config::{Config, InboxConfig};
pub use error::NotificationsError;

/// The migrations of the notifications database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The shared libraries' tables in the notifications database, migrated before [`MIGRATOR`].
pub const LIBRARY_MIGRATORS: &[&sqlx::migrate::Migrator] = &[&shop_events::inbox::MIGRATOR];

/// Why the notifications service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The service kit failed (listeners, database, migrations).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The events infrastructure failed (NATS connection, inbox table).
    #[error(transparent)]
    Events(#[from] shop_events::EventsError),
}

/// A bound notifications service with its consumers ready to start.
pub struct App {
    server: GrpcServer,
    pool: sqlx::PgPool,
    js: async_nats::jetstream::Context,
    replicas: usize,
    updates: broadcast::Sender<domain::Notification>,
    inbox_retention: InboxRetention,
    consumer_metrics: shop_events::ConsumerMetrics,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Connects the database (running migrations if configured) and NATS, and binds the
    /// listeners.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let inbox_retention = config
            .inbox
            .retention(&consumers::source_streams())
            .map_err(RuntimeError::Config)?;
        let pool = db::connect_lazy(&config.database)?;
        if config.database.migrate_on_start {
            db::migrate_with(&pool, &MIGRATOR, LIBRARY_MIGRATORS, Duration::from_secs(30)).await?;
        }
        let js = shop_events::connect(&config.nats.nats_url, "notifications").await?;
        let (updates, _) = broadcast::channel(fanout::WATCH_BUFFER);
        let max_message = config.server.max_message_bytes;
        let builder = GrpcServerBuilder::new(config.server, shop_proto::FILE_DESCRIPTOR_SET);
        let consumer_metrics = shop_events::ConsumerMetrics::default();
        builder
            .metrics()
            .with_registry(|registry| consumer_metrics.register(registry));
        let service =
            grpc::NotificationsGrpc::new(pool.clone(), updates.clone(), builder.stopping());
        let server = builder
            .add_service(
                NotificationServiceServer::new(service)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .readiness_check(db::PgReadiness::new(pool.clone()))
            // List and Watch read the database; a NATS outage only delays new notifications.
            .reported_check(shop_events::NatsReadiness::new(js.client()))
            .bind()
            .await?;
        Ok(Self {
            server,
            pool,
            js,
            replicas: config.nats.nats_stream_replicas,
            updates,
            inbox_retention,
            consumer_metrics,
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

    /// Consumes events, purges old inbox entries on schedule and serves until `shutdown`
    /// resolves; then drains the server and lets the consumers finish the messages they hold.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let stop = CancellationToken::new();
        let mut tasks = consumers::spawn(
            &self.js,
            &self.pool,
            self.replicas,
            &self.consumer_metrics,
            &stop,
        );
        tasks.push(tokio::spawn(inbox::purge_until(
            self.pool.clone(),
            consumers::inboxes(),
            self.inbox_retention,
            stop.clone().cancelled_owned(),
        )));
        tasks.push(tokio::spawn(fanout::run(
            self.pool,
            self.updates,
            stop.clone(),
        )));
        self.server.run_with_background(shutdown, stop, tasks).await
    }
}
