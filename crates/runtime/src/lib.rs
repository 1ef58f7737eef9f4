//! The service kit: what every shop mesh service is built on.
//!
//! A service's `lib.rs` builds a [`server::GrpcServerBuilder`] with its tonic services and
//! readiness checks, binds it, and runs it until a shutdown future resolves; its `main.rs`
//! parses its config (clap, flattening [`config::ServerConfig`] and friends), calls
//! [`telemetry::init`], and passes [`shutdown::signal`] as that future.
//!
//! # Layout
//! - [`background`]: retrying background work (relays, consumers) beside the server.
//! - [`client`]: resilient clients for calls to other services.
//! - [`config`]: shared settings from flags and environment variables.
//! - [`telemetry`]: tracing with `RUST_LOG`, text or JSON.
//! - [`server`]: gRPC server with health, reflection, validation and the standard layers.
//! - [`readiness`]: dependency checks that drive health and `/readyz`.
//! - [`db`]: PostgreSQL pool, start-up migrations, readiness check.
//! - [`convert`]: protobuf well-known types from stored types.
//! - [`status`]: domain errors to `tonic::Status` with `google.rpc` details.
//! - [`validation`], [`request_id`], [`observe`], [`authz`]: the server layers.
//! - [`metrics`]: Prometheus metrics on the admin port.
//! - [`peer`]: who is calling (mTLS service identity, peer address).
//! - [`sidecar`]: callers' identities from Linkerd's proxy instead of our own TLS.
//! - [`user_tokens`]: end users' bearer tokens, verified with identity's published keys.
//! - [`shutdown`]: SIGTERM / Ctrl-C.

mod admin;
pub mod admin_state;
pub mod authz;
pub mod background;
pub mod client;
pub mod config;
pub mod convert;
pub mod db;
pub mod metrics;
pub mod observe;
pub mod outbox;
pub mod page_token;
pub mod peer;
pub mod readiness;
pub mod request_id;
pub mod server;
pub mod shutdown;
pub mod sidecar;
pub mod status;
pub mod telemetry;
pub mod user_tokens;
pub mod validation;

use std::net::SocketAddr;

pub use config::{
    DatabaseConfig, LogFormat, NatsConfig, PeerIdentityConfig, PeerIdentitySource, ServerConfig,
    TelemetryConfig, TlsConfig, UserTokenConfig,
};
pub use server::{GrpcServer, GrpcServerBuilder};
pub use tokio_util::sync::CancellationToken;

/// What can go wrong while starting or running a service.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A listener could not be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why the bind failed.
        #[source]
        source: std::io::Error,
    },
    /// Other I/O failure.
    #[error("I/O error while {context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file descriptor set could not be read.
    #[error("bad file descriptor set: {0}")]
    Descriptor(String),
    /// The database could not be reached or configured.
    #[error("database: {context}")]
    Database {
        /// What was being done.
        context: &'static str,
        /// The sqlx error.
        #[source]
        source: sqlx::Error,
    },
    /// Migrations failed.
    #[error("migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
    /// The TLS certificate, key or CA could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] shop_tls::TlsError),
    /// An RPC the server serves has no authorization policy.
    #[error(transparent)]
    Policy(#[from] authz::PolicyError),
    /// A client of another service could not be built.
    #[error("client: {0}")]
    Client(#[from] shop_resilience::client::ClientError),
}
