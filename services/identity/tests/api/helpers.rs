//! `spawn_app()`: an identity service on port 0 with a fresh database, and its client.

use std::net::SocketAddr;

use identity::{App, Config, PasswordConfig, TokenConfig};
use shop_proto::identity::{RegisterRequest, User, identity_service_client::IdentityServiceClient};
use shop_runtime::{DatabaseConfig, LogFormat, NatsConfig, ServerConfig, TelemetryConfig};
use shop_testkit::{Nats, Postgres};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub postgres: Postgres,
    pub nats: Nats,
    pub database_url: String,
    pub client: IdentityServiceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), shop_runtime::RuntimeError>>>,
}

pub fn config(database_url: &str, nats_url: &str) -> Config {
    Config {
        server: ServerConfig::ephemeral(),
        database: DatabaseConfig::new(database_url),
        nats: NatsConfig::new(nats_url),
        telemetry: TelemetryConfig {
            log_format: LogFormat::Text,
        },
        tokens: TokenConfig::default(),
        passwords: PasswordConfig::default(),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`] with settings changed by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let postgres = Postgres::start().await.expect("postgres starts");
    let database_url = postgres.fresh_database().await.expect("fresh database");
    let nats = Nats::start().await.expect("nats starts");
    let mut config = config(&database_url, &nats.url());
    adjust(&mut config);
    spawn_configured(postgres, nats, database_url, config).await
}

pub async fn spawn_on(postgres: Postgres, nats: Nats, database_url: String) -> TestApp {
    spawn_on_with(postgres, nats, database_url, |_| {}).await
}

/// [`spawn_on`] with settings changed by `adjust`.
pub async fn spawn_on_with(
    postgres: Postgres,
    nats: Nats,
    database_url: String,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let mut config = config(&database_url, &nats.url());
    adjust(&mut config);
    spawn_configured(postgres, nats, database_url, config).await
}

async fn spawn_configured(
    postgres: Postgres,
    nats: Nats,
    database_url: String,
    config: Config,
) -> TestApp {
    let app = App::build(config).await.expect("identity builds");
    let addr = app.grpc_addr();
    let admin_addr = app.admin_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects");
    TestApp {
        grpc_addr: addr,
        admin_addr,
        postgres,
        nats,
        database_url,
        client: IdentityServiceClient::new(channel),
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    /// Stops the service, keeping the database for another instance.
    pub async fn stop(mut self) -> (Postgres, Nats, String) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
        (self.postgres, self.nats, self.database_url)
    }

    pub async fn register(&mut self, email: &str, password: &str) -> User {
        self.client
            .register(RegisterRequest {
                email: email.into(),
                password: password.into(),
                display_name: "Ada".into(),
            })
            .await
            .expect("register")
            .into_inner()
            .user
            .expect("user in response")
    }
}

/// The fields named by the `BadRequest` detail of `status`.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt as _;
    status
        .get_error_details()
        .bad_request()
        .map(|br| {
            br.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The delay of the `RetryInfo` detail of `status`.
pub fn retry_delay(status: &tonic::Status) -> Option<std::time::Duration> {
    use tonic_types::StatusExt as _;
    status.get_error_details().retry_info()?.retry_delay
}
