//! Settings every service shares, read from flags and environment variables (clap).
//!
//! A service flattens these into its own config struct. Tests build them in code with
//! [`ServerConfig::ephemeral`] instead of setting environment variables.
//!
//! Every default is written once, in [`defaults`] (the server protection ones come from
//! `shop_resilience`, which applies them); the flags, [`ServerConfig::ephemeral`] and the tests
//! read them from there, and a test checks the README's configuration table against them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::RuntimeError;

/// The default of every shared setting.
pub mod defaults {
    /// `GRPC_ADDR`.
    pub const GRPC_ADDR: &str = "127.0.0.1:50051";
    /// `ADMIN_ADDR`.
    pub const ADMIN_ADDR: &str = "127.0.0.1:9090";
    /// `SHUTDOWN_DRAIN_SECS`.
    pub const SHUTDOWN_DRAIN_SECS: f64 = 0.0;
    /// `SHUTDOWN_GRACE_SECS`.
    pub const SHUTDOWN_GRACE_SECS: f64 = 20.0;
    /// `DEFAULT_DEADLINE_SECS`.
    pub const DEFAULT_DEADLINE_SECS: f64 = 30.0;
    /// `MAX_MESSAGE_BYTES` (4 MiB).
    pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
    /// `MAX_CONCURRENT_STREAMS`.
    pub const MAX_CONCURRENT_STREAMS: u32 = 256;
    /// `READINESS_INTERVAL_MS`.
    pub const READINESS_INTERVAL_MS: u64 = 1000;
    /// `MAX_CONCURRENT_REQUESTS`.
    pub const MAX_CONCURRENT_REQUESTS: usize = shop_resilience::server::DEFAULT_MAX_CONCURRENT;
    /// `RATE_LIMIT_PER_SECOND`.
    pub const RATE_LIMIT_PER_SECOND: u32 = shop_resilience::rate_limit::DEFAULT_PER_SECOND;
    /// `RATE_LIMIT_BURST`.
    pub const RATE_LIMIT_BURST: u32 = shop_resilience::rate_limit::DEFAULT_BURST;
    /// `LOG_FORMAT`.
    pub const LOG_FORMAT: &str = "text";
    /// `DATABASE_MAX_CONNECTIONS`.
    pub const DATABASE_MAX_CONNECTIONS: u32 = 10;
    /// `MIGRATE_ON_START`.
    pub const MIGRATE_ON_START: bool = true;
    /// `NATS_URL`.
    pub const NATS_URL: &str = "nats://127.0.0.1:4222";
    /// `NATS_STREAM_REPLICAS`.
    pub const NATS_STREAM_REPLICAS: usize = 1;
    /// `JWT_ISSUER`.
    pub const JWT_ISSUER: &str = "shop-identity";
    /// `JWT_AUDIENCE`.
    pub const JWT_AUDIENCE: &str = "shop";
    /// `LINKERD_IDENTITY_SUFFIX`: Linkerd's default control plane namespace and trust domain.
    pub const LINKERD_IDENTITY_SUFFIX: &str = "serviceaccount.identity.linkerd.cluster.local";
}

/// The gRPC and admin listeners and how the server drains.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Address the gRPC server listens on.
    #[arg(long, env = "GRPC_ADDR", default_value = defaults::GRPC_ADDR)]
    pub grpc_addr: SocketAddr,

    /// Address of the admin HTTP server (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "ADMIN_ADDR", default_value = defaults::ADMIN_ADDR)]
    pub admin_addr: SocketAddr,

    /// After a stop signal, seconds to keep serving while reporting NOT_SERVING, so load
    /// balancers stop routing here before the listener closes.
    #[arg(long, env = "SHUTDOWN_DRAIN_SECS", default_value_t = defaults::SHUTDOWN_DRAIN_SECS)]
    pub shutdown_drain_secs: f64,

    /// Seconds in-flight calls get to finish once the listener has closed.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = defaults::SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: f64,

    /// Deadline applied to a call that brings none (`grpc-timeout`); a shorter incoming
    /// deadline wins.
    #[arg(long, env = "DEFAULT_DEADLINE_SECS", default_value_t = defaults::DEFAULT_DEADLINE_SECS)]
    pub default_deadline_secs: f64,

    /// Largest request message accepted, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = defaults::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Concurrent calls allowed on one HTTP/2 connection.
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = defaults::MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,

    /// How often readiness checks (database, NATS) run, in milliseconds.
    #[arg(long, env = "READINESS_INTERVAL_MS", default_value_t = defaults::READINESS_INTERVAL_MS)]
    pub readiness_interval_ms: u64,

    /// Calls handled at once across all connections; beyond it calls are shed at once with
    /// RESOURCE_EXHAUSTED instead of queueing.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = defaults::MAX_CONCURRENT_REQUESTS)]
    pub max_concurrent_requests: usize,

    /// Sustained calls per second allowed to one caller (its service identity, else the user
    /// of its verified token, else its IP address); 0 turns per-caller rate limiting off.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value_t = defaults::RATE_LIMIT_PER_SECOND)]
    pub rate_limit_per_second: u32,

    /// Calls one caller may burst above its sustained rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = defaults::RATE_LIMIT_BURST)]
    pub rate_limit_burst: u32,

    /// Mutual TLS for the gRPC listener and for calls to other services.
    #[command(flatten)]
    pub tls: TlsConfig,

    /// How end users' tokens are verified.
    #[command(flatten)]
    pub user_tokens: UserTokenConfig,

    /// Where callers' service identities come from: our mutual TLS, or a sidecar mesh.
    #[command(flatten)]
    pub peer_identity: PeerIdentityConfig,
}

/// Who proves a caller's service identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerIdentitySource {
    /// The caller's certificate in our own mutual TLS (`TLS_*`); plaintext without it.
    #[default]
    Tls,
    /// Linkerd's proxy: its `l5d-client-id` header, with our own TLS off (`crate::sidecar`).
    Linkerd,
}

/// `PEER_IDENTITY` and, under a sidecar mesh, this workload's own name in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct PeerIdentityConfig {
    /// `tls` (our mutual TLS) or `linkerd` (the identity Linkerd's proxy verified; only where
    /// every connection goes through the proxy).
    #[arg(long, env = "PEER_IDENTITY", value_enum, default_value_t = PeerIdentitySource::Tls)]
    pub peer_identity: PeerIdentitySource,

    /// How Linkerd names workloads after `<sa>.<ns>.`:
    /// `serviceaccount.identity.<control plane namespace>.<trust domain>`.
    #[arg(
        long,
        env = "LINKERD_IDENTITY_SUFFIX",
        default_value = defaults::LINKERD_IDENTITY_SUFFIX
    )]
    pub linkerd_identity_suffix: String,

    /// This workload's service account (the downward API's `spec.serviceAccountName`), its
    /// own name in the mesh under `PEER_IDENTITY=linkerd`.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: Option<String>,

    /// This workload's namespace (the downward API's `metadata.namespace`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

/// Where the keys of user tokens come from and what a token must say.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct UserTokenConfig {
    /// identity's gRPC address (`http://host:port`), whose `GetJwks` publishes the keys user
    /// tokens are signed with. Unset: no user token is accepted, and RPCs only users may call
    /// are refused.
    #[arg(long, env = "IDENTITY_URL")]
    pub identity_url: Option<String>,

    /// `iss` a token must carry (and identity writes).
    #[arg(long, env = "JWT_ISSUER", default_value = defaults::JWT_ISSUER)]
    pub jwt_issuer: String,

    /// `aud` a token must carry (and identity writes).
    #[arg(long, env = "JWT_AUDIENCE", default_value = defaults::JWT_AUDIENCE)]
    pub jwt_audience: String,
}

impl Default for UserTokenConfig {
    fn default() -> Self {
        Self {
            identity_url: None,
            jwt_issuer: defaults::JWT_ISSUER.to_owned(),
            jwt_audience: defaults::JWT_AUDIENCE.to_owned(),
        }
    }
}

/// The service's certificate, key and trusted CA (PEM files, re-read when they change). All
/// three or none: without them the gRPC listener and outgoing calls are plaintext.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct TlsConfig {
    /// Certificate chain (leaf first) naming the service as
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service>`.
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// Private key of the certificate.
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// CA certificates that peers' certificates must chain to.
    #[arg(long, env = "TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The files, when TLS is configured; an error when only some are given.
    pub fn files(&self) -> Result<Option<shop_tls::TlsFiles>, RuntimeError> {
        match (&self.tls_cert_file, &self.tls_key_file, &self.tls_ca_file) {
            (Some(cert), Some(key), Some(ca)) => Ok(Some(shop_tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            (None, None, None) => Ok(None),
            _ => Err(RuntimeError::Config(
                "TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE go together: set all three or none"
                    .into(),
            )),
        }
    }

    /// TLS from `files`.
    #[must_use]
    pub fn from_files(files: &shop_tls::TlsFiles) -> Self {
        Self {
            tls_cert_file: Some(files.cert.clone()),
            tls_key_file: Some(files.key.clone()),
            tls_ca_file: Some(files.ca.clone()),
        }
    }
}

impl ServerConfig {
    /// Loopback on ephemeral ports with a fast readiness loop and no drain delay: for tests.
    #[must_use]
    pub fn ephemeral() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shutdown_drain_secs: 0.0,
            shutdown_grace_secs: 10.0,
            default_deadline_secs: defaults::DEFAULT_DEADLINE_SECS,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            max_concurrent_streams: defaults::MAX_CONCURRENT_STREAMS,
            readiness_interval_ms: 100,
            max_concurrent_requests: defaults::MAX_CONCURRENT_REQUESTS,
            rate_limit_per_second: defaults::RATE_LIMIT_PER_SECOND,
            rate_limit_burst: defaults::RATE_LIMIT_BURST,
            tls: TlsConfig::default(),
            user_tokens: UserTokenConfig::default(),
            peer_identity: PeerIdentityConfig {
                linkerd_identity_suffix: defaults::LINKERD_IDENTITY_SUFFIX.to_owned(),
                ..PeerIdentityConfig::default()
            },
        }
    }

    /// Checks the values clap cannot: durations must be finite and non-negative.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        for (name, value) in [
            ("SHUTDOWN_DRAIN_SECS", self.shutdown_drain_secs),
            ("SHUTDOWN_GRACE_SECS", self.shutdown_grace_secs),
            ("DEFAULT_DEADLINE_SECS", self.default_deadline_secs),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(RuntimeError::Config(format!(
                    "{name} must be a non-negative number of seconds, got {value}"
                )));
            }
        }
        if self.default_deadline_secs == 0.0 {
            return Err(RuntimeError::Config(
                "DEFAULT_DEADLINE_SECS must be greater than zero".into(),
            ));
        }
        if self.max_message_bytes < 1024 {
            return Err(RuntimeError::Config(
                "MAX_MESSAGE_BYTES must be at least 1024".into(),
            ));
        }
        if self.max_concurrent_requests == 0 {
            return Err(RuntimeError::Config(
                "MAX_CONCURRENT_REQUESTS must be greater than zero".into(),
            ));
        }
        if self.rate_limit_per_second > 0 && self.rate_limit_burst == 0 {
            return Err(RuntimeError::Config(
                "RATE_LIMIT_BURST must be greater than zero when rate limiting is on".into(),
            ));
        }
        if self.readiness_interval_ms == 0 {
            return Err(RuntimeError::Config(
                "READINESS_INTERVAL_MS must be greater than zero".into(),
            ));
        }
        self.tls.files()?;
        Ok(())
    }

    pub(crate) fn protection(&self) -> shop_resilience::server::ServerConfig {
        let rate_limit = std::num::NonZeroU32::new(self.rate_limit_per_second).map(|per_second| {
            shop_resilience::rate_limit::RateLimitConfig {
                per_second,
                burst: std::num::NonZeroU32::new(self.rate_limit_burst)
                    .unwrap_or(std::num::NonZeroU32::MIN),
                ..Default::default()
            }
        });
        shop_resilience::server::ServerConfig {
            max_concurrent: self.max_concurrent_requests,
            rate_limit,
        }
    }

    pub(crate) fn drain_delay(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_drain_secs)
    }

    pub(crate) fn grace_period(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_grace_secs)
    }

    pub(crate) fn default_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.default_deadline_secs)
    }

    pub(crate) fn readiness_interval(&self) -> Duration {
        Duration::from_millis(self.readiness_interval_ms)
    }
}

/// Log output settings. The filter itself comes from `RUST_LOG`.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryConfig {
    /// `text` for people, `json` for log collectors.
    #[arg(long, env = "LOG_FORMAT", default_value = defaults::LOG_FORMAT)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A PostgreSQL database a service owns.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseConfig {
    /// Connection URL of the service's own database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// Largest number of pooled connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = defaults::DATABASE_MAX_CONNECTIONS)]
    pub database_max_connections: u32,

    /// Run the embedded migrations at start.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = defaults::MIGRATE_ON_START, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,
}

impl DatabaseConfig {
    /// A config for `url` with the defaults, migrations on.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            database_url: url.into(),
            database_max_connections: defaults::DATABASE_MAX_CONNECTIONS,
            migrate_on_start: defaults::MIGRATE_ON_START,
        }
    }
}

/// The NATS JetStream server a service publishes to or consumes from.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsConfig {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = defaults::NATS_URL)]
    pub nats_url: String,

    /// Replicas of the streams this service provisions (3 on a production cluster).
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = defaults::NATS_STREAM_REPLICAS)]
    pub nats_stream_replicas: usize,
}

impl NatsConfig {
    /// A config for `url` with one replica.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            nats_url: url.into(),
            nats_stream_replicas: defaults::NATS_STREAM_REPLICAS,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::Args as _;

    use super::*;

    /// The README's configuration table, as (variable, default) pairs.
    fn readme_defaults() -> Vec<(String, String)> {
        let readme = include_str!("../../../README.md");
        let table = readme
            .split("## Configuration (every service)")
            .nth(1)
            .expect("the README has a configuration section");
        let mut pairs = Vec::new();
        for row in table.lines().skip_while(|l| !l.starts_with('|')) {
            let Some(row) = row.strip_prefix('|') else {
                break;
            };
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let names = cells[0].split(", ").map(|n| n.trim_matches('`'));
            let values = cells[1].split(", ").map(|v| v.trim_matches('`'));
            pairs.extend(names.zip(values).map(|(n, v)| (n.to_owned(), v.to_owned())));
        }
        pairs
    }

    /// The README's way of writing a value, in the flags' terms.
    fn normalise(value: &str) -> String {
        match value.strip_suffix(" MiB") {
            Some(mib) => (mib.parse::<usize>().unwrap() * 1024 * 1024).to_string(),
            None => value.to_owned(),
        }
    }

    #[test]
    fn the_readme_states_the_flags_defaults() {
        let server = ServerConfig::augment_args(clap::Command::new("service"));
        let command = [
            DatabaseConfig::augment_args,
            NatsConfig::augment_args,
            TelemetryConfig::augment_args,
        ]
        .into_iter()
        .fold(server.clone(), |command, augment| augment(command));
        let mut checked = std::collections::HashSet::new();
        for (name, readme) in readme_defaults() {
            let Some(arg) = command
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|env| env == name.as_str()))
            else {
                continue; // not a flag (RUST_LOG)
            };
            let Some(default) = arg.get_default_values().first() else {
                checked.insert(name); // required (DATABASE_URL) or optional (TLS_CERT_FILE)
                continue;
            };
            let default = default.to_string_lossy();
            assert_eq!(normalise(&readme), default, "README default of {name}");
            checked.insert(name);
        }
        for arg in server.get_arguments() {
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert!(checked.contains(env), "{env} is not in the README's table");
        }
        assert!(checked.contains("MIGRATE_ON_START") && checked.contains("LOG_FORMAT"));
    }

    #[test]
    fn ephemeral_keeps_the_protection_defaults() {
        let cfg = ServerConfig::ephemeral();
        let protection = cfg.protection();
        let resilience = shop_resilience::server::ServerConfig::default();
        assert_eq!(protection, resilience);
        cfg.validate().unwrap();
    }
}
