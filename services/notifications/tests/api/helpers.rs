//! `spawn_app()`: a notifications service on port 0 with its own database and nats-server.

use notifications::{App, Config, InboxConfig};
use shop_events::{EventEnvelope, EventPublisher, StreamSpec};
use shop_proto::notifications::notification_service_client::NotificationServiceClient;
use shop_runtime::{DatabaseConfig, LogFormat, NatsConfig, ServerConfig, TelemetryConfig};
use shop_testkit::{Nats, Postgres};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use uuid::Uuid;

pub struct TestApp {
    pub _postgres: Postgres,
    pub _nats: Nats,
    pub client: NotificationServiceClient<Channel>,
    pub publisher: EventPublisher,
    /// The service's database, for looking at what it wrote.
    pub pool: PgPool,
    _stop: oneshot::Sender<()>,
}

/// The config `spawn_app` uses, for a database and nats-server.
pub fn config(database_url: String, nats: &Nats) -> Config {
    Config {
        server: ServerConfig::ephemeral(),
        database: DatabaseConfig::new(database_url),
        nats: NatsConfig::new(nats.url()),
        inbox: InboxConfig::default(),
        telemetry: TelemetryConfig {
            log_format: LogFormat::Text,
        },
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// `spawn_app` with the config changed by `configure` first.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let postgres = Postgres::start().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let database_url = postgres.fresh_database().await.unwrap();
    let mut config = config(database_url.clone(), &nats);
    configure(&mut config);
    let app = App::build(config).await.unwrap();
    let addr = app.grpc_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let js = shop_events::connect(&nats.url(), "test-producer")
        .await
        .unwrap();
    for context in ["identity", "orders", "shipping"] {
        StreamSpec::for_context(context).ensure(&js).await.unwrap();
    }
    TestApp {
        _postgres: postgres,
        _nats: nats,
        client: NotificationServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap(),
        publisher: EventPublisher::new(js),
        pool: PgPool::connect(&database_url).await.unwrap(),
        _stop: stop,
    }
}

impl TestApp {
    /// Publishes `event` as its producer would; returns its event id.
    pub async fn publish<E: prost::Message + prost::Name>(&self, event: E) -> Uuid {
        let envelope = EventEnvelope::new(event);
        self.publisher.publish(&envelope).await.unwrap();
        envelope.id
    }
}
