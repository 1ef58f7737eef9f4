//! Support for the end-to-end tests: start the real services in-process on ephemeral ports
//! with their own databases, and find the outside tools (`buf`, a Python with `grpcio-tools`)
//! that `./scripts/test` installs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use shop_runtime::{DatabaseConfig, LogFormat, NatsConfig, ServerConfig, TelemetryConfig};
use shop_testkit::{Nats, Postgres, TestPki};
use tokio::sync::oneshot;

/// A service running in this process until dropped.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn telemetry() -> TelemetryConfig {
    TelemetryConfig {
        log_format: LogFormat::Text,
    }
}

fn spawn(
    addr: SocketAddr,
    run: impl FnOnce(oneshot::Receiver<()>) -> tokio::task::JoinHandle<()>,
) -> Running {
    let (stop, stopped) = oneshot::channel();
    drop(run(stopped));
    Running {
        addr,
        stop: Some(stop),
    }
}

/// The catalog service on a fresh database of `postgres`, publishing to `nats`.
pub async fn start_catalog(postgres: &Postgres, nats: &Nats) -> anyhow::Result<Running> {
    start_catalog_with(postgres, nats, ServerConfig::ephemeral()).await
}

/// [`start_catalog`] with `server`'s settings (TLS, ...).
pub async fn start_catalog_with(
    postgres: &Postgres,
    nats: &Nats,
    server: ServerConfig,
) -> anyhow::Result<Running> {
    let config = catalog::Config {
        server,
        database: DatabaseConfig::new(postgres.fresh_database().await?),
        nats: NatsConfig::new(nats.url()),
        telemetry: telemetry(),
    };
    let app = catalog::App::build(config).await?;
    let addr = app.grpc_addr();
    Ok(spawn(addr, |stopped| {
        tokio::spawn(async move {
            let _ = app.run_until(async { drop(stopped.await) }).await;
        })
    }))
}

/// The identity service on a fresh database of `postgres`, publishing to `nats`.
pub async fn start_identity(postgres: &Postgres, nats: &Nats) -> anyhow::Result<Running> {
    start_identity_with(postgres, nats, ServerConfig::ephemeral()).await
}

/// [`start_identity`] with `server`'s settings (TLS, ...).
pub async fn start_identity_with(
    postgres: &Postgres,
    nats: &Nats,
    server: ServerConfig,
) -> anyhow::Result<Running> {
    let config = identity::Config {
        server,
        database: DatabaseConfig::new(postgres.fresh_database().await?),
        nats: NatsConfig::new(nats.url()),
        telemetry: telemetry(),
        tokens: identity::TokenConfig::default(),
        passwords: identity::PasswordConfig::default(),
    };
    let app = identity::App::build(config).await?;
    let addr = app.grpc_addr();
    Ok(spawn(addr, |stopped| {
        tokio::spawn(async move {
            let _ = app.run_until(async { drop(stopped.await) }).await;
        })
    }))
}

/// The notifications service on a fresh database of `postgres`, consuming from `nats`.
pub async fn start_notifications(postgres: &Postgres, nats: &Nats) -> anyhow::Result<Running> {
    start_notifications_with(postgres, nats, ServerConfig::ephemeral()).await
}

/// [`start_notifications`] with `server`'s settings (TLS, user tokens, ...).
pub async fn start_notifications_with(
    postgres: &Postgres,
    nats: &Nats,
    server: ServerConfig,
) -> anyhow::Result<Running> {
    let config = notifications::Config {
        server,
        database: DatabaseConfig::new(postgres.fresh_database().await?),
        nats: NatsConfig::new(nats.url()),
        inbox: notifications::InboxConfig::default(),
        telemetry: telemetry(),
    };
    let app = notifications::App::build(config).await?;
    let addr = app.grpc_addr();
    Ok(spawn(addr, |stopped| {
        tokio::spawn(async move {
            let _ = app.run_until(async { drop(stopped.await) }).await;
        })
    }))
}

/// The shipping service on a fresh database of `postgres`, consuming from `nats`, with
/// `server`'s settings and a carrier that does not pick up within a test (shipments stay
/// SCHEDULED, so cancellable).
pub async fn start_shipping_with(
    postgres: &Postgres,
    nats: &Nats,
    server: ServerConfig,
) -> anyhow::Result<Running> {
    let delivery = shipping::DeliveryConfig {
        pickup_delay_secs: 3600.0,
        ..shipping::DeliveryConfig::default()
    };
    let config = shipping::Config {
        server,
        database: DatabaseConfig::new(postgres.fresh_database().await?),
        nats: NatsConfig::new(nats.url()),
        telemetry: telemetry(),
        delivery,
        inbox: shipping::InboxConfig::default(),
    };
    let app = shipping::App::build(config).await?;
    let addr = app.grpc_addr();
    Ok(spawn(addr, |stopped| {
        tokio::spawn(async move {
            let _ = app.run_until(async { drop(stopped.await) }).await;
        })
    }))
}

/// Ephemeral server settings with mutual TLS from a certificate `pki` issues to `service`.
pub fn tls_server(pki: &TestPki, service: &str) -> anyhow::Result<ServerConfig> {
    let mut server = ServerConfig::ephemeral();
    server.tls = shop_runtime::TlsConfig::from_files(&pki.issue(service)?);
    Ok(server)
}

/// A user's channel to `addr`: TLS that trusts the mesh's CA, no certificate (users have none).
pub fn user_channel(pki: &TestPki, addr: SocketAddr) -> anyhow::Result<tonic::transport::Channel> {
    Ok(
        tonic::transport::Channel::from_shared(format!("http://{addr}"))?
            .connect_with_connector_lazy(pki.anonymous_connector()?),
    )
}

/// The workspace root.
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$SHOP_BUF`, else `buf` on `PATH`, else the workspace's npm install.
pub fn buf() -> anyhow::Result<PathBuf> {
    find_tool(
        "SHOP_BUF",
        "buf",
        &[workspace_root().join(".tools/node_modules/.bin/buf")],
    )
}

/// `$SHOP_PYTHON`, else the workspace `.venv` (where `./scripts/test` installs grpcio-tools).
pub fn python() -> anyhow::Result<PathBuf> {
    let venv = workspace_root().join(".venv/bin/python");
    if let Some(path) = std::env::var_os("SHOP_PYTHON") {
        return Ok(PathBuf::from(path));
    }
    if venv.exists() {
        return Ok(venv);
    }
    bail!("no Python with grpcio-tools: run ./scripts/test (it creates .venv) or set SHOP_PYTHON")
}

fn find_tool(env: &str, name: &str, extra: &[PathBuf]) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    on_path
        .chain(extra.iter().cloned())
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!("`{name}` not found: run ./scripts/test (it installs it) or set {env}")
        })
}
