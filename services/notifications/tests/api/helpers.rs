//! `spawn_app()`: a notifications service on port 0 with its own database and nats-server.

use notifications::{App, Config};
use shop_events::{EventEnvelope, EventPublisher, StreamSpec};
use shop_proto::notifications::notification_service_client::NotificationServiceClient;
use shop_runtime::{DatabaseConfig, LogFormat, NatsConfig, ServerConfig, TelemetryConfig};
use shop_testkit::{Nats, Postgres};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub struct TestApp {
    pub _postgres: Postgres,
    pub _nats: Nats,
    pub client: NotificationServiceClient<Channel>,
    pub publisher: EventPublisher,
    _stop: oneshot::Sender<()>,
}

pub async fn spawn_app() -> TestApp {
    let postgres = Postgres::start().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let config = Config {
        server: ServerConfig::ephemeral(),
        database: DatabaseConfig::new(postgres.fresh_database().await.unwrap()),
        nats: NatsConfig::new(nats.url()),
        telemetry: TelemetryConfig {
            log_format: LogFormat::Text,
        },
    };
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
        _stop: stop,
    }
}

impl TestApp {
    pub async fn publish<E: prost::Message + prost::Name>(&self, event: E) {
        self.publisher
            .publish(&EventEnvelope::new(event))
            .await
            .unwrap();
    }
}
