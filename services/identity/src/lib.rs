//! The identity service: users, credentials and access tokens, behind
//! `shop.identity.v1.IdentityService`.
//!
//! Passwords are hashed with argon2id on the blocking pool, a bounded number at once (each
//! holds 19 MiB); failed logins are throttled per account and per peer. Access tokens are
//! EdDSA JWTs signed with a key kept in the service's database, sealed under a key-encryption
//! key from configuration, rotated by `RotateSigningKey` and published by `GetJwks`.
//!
//! # Layout
//! - `config`: settings.
//! - `password`: argon2id hashing and verification, no I/O.
//! - `hashing`: the bound on argon2 work running at once.
//! - `throttle`: failed-login throttling per account and per peer.
//! - `kek`: key-encryption keys, which seal the signing keys at rest.
//! - `keys`: the signing keys: created on first start, rotated, re-read, retired.
//! - `store`: PostgreSQL (sqlx); the only module with SQL.
//! - `grpc`: the tonic service and protobuf <-> domain mapping.
//! - `error`: the one mapping from [`IdentityError`] to `tonic::Status`.
//! - `events`: the events this service publishes and the outbox relay that carries them.

pub mod config;
mod error;
pub mod events;
mod grpc;
mod hashing;
mod kek;
mod keys;
mod password;
mod store;
mod throttle;

use std::{future::Future, net::SocketAddr, time::Duration};

use shop_proto::identity::identity_service_server::IdentityServiceServer;
use shop_runtime::{CancellationToken, GrpcServer, GrpcServerBuilder, RuntimeError, db};

pub use config::{Config, PasswordConfig, TokenConfig};
pub use error::IdentityError;
pub use kek::Kek;

/// The migrations of the identity database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The shared libraries' tables in the identity database, migrated before [`MIGRATOR`].
pub const LIBRARY_MIGRATORS: &[&sqlx::migrate::Migrator] = &[&shop_outbox::MIGRATOR];

/// A bound identity service and its outbox relay.
pub struct App {
    server: GrpcServer,
    pool: sqlx::PgPool,
    js: async_nats::jetstream::Context,
    replicas: usize,
    outbox_metrics: shop_outbox::RelayMetrics,
    keys: keys::KeyRing,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Why the identity service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The service kit failed (listeners, database, migrations).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The signing key could not be loaded or created.
    #[error("signing key")]
    SigningKey(#[source] IdentityError),
    /// The outbox table could not be created.
    #[error(transparent)]
    Outbox(#[from] shop_outbox::OutboxError),
    /// NATS could not be set up.
    #[error(transparent)]
    Events(#[from] shop_events::EventsError),
}

impl App {
    /// Connects the database (running migrations if configured), loads or creates the
    /// signing key, and binds the listeners.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        config.passwords.validate()?;
        config.tokens.validate()?;
        let pool = db::connect_lazy(&config.database)?;
        if config.database.migrate_on_start {
            db::migrate_with(&pool, &MIGRATOR, LIBRARY_MIGRATORS, Duration::from_secs(30)).await?;
        }
        let js = shop_events::connect(&config.nats.nats_url, "identity").await?;
        let store = store::PgIdentityStore::new(pool.clone());
        let keys = keys::KeyRing::open(store.clone(), &config.tokens, &config.server.user_tokens)
            .await
            .map_err(StartError::SigningKey)?;
        let hashes = hashing::HashPool::new(
            config.passwords.hash_concurrency(),
            config.passwords.hash_wait(),
        );
        let throttle = throttle::LoginThrottle::new(&config.passwords);
        let service = grpc::IdentityGrpc::new(
            store,
            keys.clone(),
            hashes,
            throttle,
            &config.tokens.admin_emails,
        );
        let max_message = config.server.max_message_bytes;
        let builder = GrpcServerBuilder::new(config.server, shop_proto::FILE_DESCRIPTOR_SET);
        // shop_outbox_parked / shop_outbox_unpublished on /metrics, kept fresh by the relay.
        let outbox_metrics = shop_outbox::RelayMetrics::default();
        builder
            .metrics()
            .with_registry(|registry| outbox_metrics.register(registry));
        let server = builder
            .add_service(
                IdentityServiceServer::new(service)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message),
            )
            .readiness_check(db::PgReadiness::new(pool.clone()))
            // Register writes its event to the outbox, so no RPC needs NATS: an outage is
            // reported (and the relay catches up after it), not a reason to leave traffic.
            .reported_check(shop_events::NatsReadiness::new(js.client()))
            .bind()
            .await?;
        Ok(Self {
            server,
            pool,
            js,
            replicas: config.nats.nats_stream_replicas,
            outbox_metrics,
            keys,
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
            "identity",
            self.js,
            self.pool,
            self.replicas,
            self.outbox_metrics,
            stop.clone(),
        ));
        let keys = tokio::spawn(self.keys.refresh_until(stop.clone()));
        self.server
            .run_with_background(shutdown, stop, vec![relay, keys])
            .await
    }
}
