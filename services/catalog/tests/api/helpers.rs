//! `spawn_app()`: a catalog service on port 0 with a fresh database, and its clients.

use std::net::SocketAddr;

use catalog::{App, Config};
use shop_proto::{
    catalog::{CreateProductRequest, Product, catalog_service_client::CatalogServiceClient},
    common::Money,
};
use shop_runtime::{DatabaseConfig, LogFormat, NatsConfig, ServerConfig, TelemetryConfig};
use shop_testkit::{Nats, Postgres};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

pub struct TestApp {
    #[allow(dead_code)] // read by some tests only
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub postgres: Postgres,
    pub nats: Nats,
    pub database_url: String,
    pub client: CatalogServiceClient<Channel>,
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), shop_runtime::RuntimeError>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(ServerConfig::ephemeral()).await
}

pub async fn spawn_app_with(server: ServerConfig) -> TestApp {
    let postgres = Postgres::start().await.expect("postgres starts");
    let database_url = postgres.fresh_database().await.expect("fresh database");
    let nats = Nats::start().await.expect("nats starts");
    let server_tls = server.tls.files().expect("valid TLS settings");
    let config = Config {
        server,
        database: DatabaseConfig::new(database_url.clone()),
        nats: NatsConfig::new(nats.url()),
        telemetry: TelemetryConfig {
            log_format: LogFormat::Text,
        },
    };
    let app = App::build(config).await.expect("catalog builds");
    let grpc_addr = app.grpc_addr();
    let admin_addr = app.admin_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let endpoint = Channel::from_shared(format!("http://{grpc_addr}")).expect("valid uri");
    let channel = match server_tls {
        // Over mutual TLS the default client presents the service's own certificate.
        Some(files) => {
            let tls = shop_tls::MeshTls::load(files).expect("server certificate loads");
            let identity = tls.identity();
            endpoint.connect_with_connector_lazy(shop_tls::MtlsConnector::new(tls, identity))
        }
        None => endpoint.connect().await.expect("connects"),
    };
    TestApp {
        grpc_addr,
        admin_addr,
        postgres,
        nats,
        database_url,
        client: CatalogServiceClient::new(channel.clone()),
        channel,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    /// Stops the service and waits for it to drain.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }

    pub async fn create(&mut self, sku: &str, name: &str, category: &str, units: i64) -> Product {
        self.client
            .create_product(create_request(sku, name, category, units))
            .await
            .expect("create_product")
            .into_inner()
            .product
            .expect("product in response")
    }
}

pub fn usd(units: i64, nanos: i32) -> Money {
    Money {
        units,
        nanos,
        currency_code: "USD".into(),
    }
}

pub fn create_request(sku: &str, name: &str, category: &str, units: i64) -> CreateProductRequest {
    CreateProductRequest {
        sku: sku.into(),
        name: name.into(),
        description: format!("{name}, described"),
        category: category.into(),
        price: Some(usd(units, 500_000_000)),
        idempotency_key: String::new(),
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
