//! `spawn_app()`: a shipping service on port 0 with a fresh database and its own nats-server;
//! its client; publishing order events as the orders service would (an envelope through
//! `shop_events`); reading back what reached JetStream and the dead-letter stream.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt as _;
use prost::Message as _;
use shipping::{App, Config, DeliveryConfig, InboxConfig};
use shop_events::{EventEnvelope, EventPublisher, Published, StreamSpec};
use shop_proto::{
    common::{Money, PostalAddress},
    orders::{OrderConfirmed, OrderLine},
    shipping::{
        GetShipmentRequest, Shipment, ShipmentStatus, get_shipment_request::Lookup,
        shipping_service_client::ShippingServiceClient,
    },
};
use shop_runtime::{DatabaseConfig, LogFormat, NatsConfig, ServerConfig, TelemetryConfig};
use shop_testkit::{Nats, Postgres, wait_for, wait_until};
use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use uuid::Uuid;

/// How long a test waits for something asynchronous (an event consumed, a sweep).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// One running shipping process (in-process), stopped by [`Replica::shutdown`].
pub struct Replica {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), shop_runtime::RuntimeError>>>,
}

impl Replica {
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
}

pub struct TestApp {
    pub client: ShippingServiceClient<Channel>,
    pub channel: Channel,
    pub admin_addr: SocketAddr,
    /// A direct connection to the service's database, for checks behind the API.
    pub db: PgPool,
    pub database_url: String,
    pub js: jetstream::Context,
    pub publisher: EventPublisher,
    pub nats: Nats,
    _postgres: Postgres,
    replica: Option<Replica>,
}

/// Delays short enough that a test sees a shipment delivered within a second or two.
pub fn fast(config: &mut Config) {
    config.delivery.pickup_delay_secs = 0.2;
    config.delivery.delivery_delay_secs = 0.3;
    config.delivery.sweep_interval_ms = 50;
}

/// A carrier that never picks up during a test: shipments stay SCHEDULED (cancellable).
pub fn never_picked_up(config: &mut Config) {
    config.delivery.pickup_delay_secs = 3600.0;
    config.delivery.sweep_interval_ms = 50;
}

/// Picked up at once, then on the road for an hour: shipments reach IN_TRANSIT and stay.
pub fn stays_in_transit(config: &mut Config) {
    config.delivery.pickup_delay_secs = 0.0;
    config.delivery.delivery_delay_secs = 3600.0;
    config.delivery.sweep_interval_ms = 50;
}

/// The config of a shipping service on `database_url` and `nats`.
pub fn config(database_url: &str, nats: &Nats) -> Config {
    Config {
        server: ServerConfig::ephemeral(),
        database: DatabaseConfig::new(database_url),
        nats: NatsConfig::new(nats.url()),
        telemetry: TelemetryConfig {
            log_format: LogFormat::Text,
        },
        delivery: DeliveryConfig::default(),
        inbox: InboxConfig::default(),
    }
}

/// Builds and starts a shipping service from `config`.
pub async fn start(config: Config) -> Replica {
    let app = App::build(config).await.expect("shipping builds");
    let grpc_addr = app.grpc_addr();
    let admin_addr = app.admin_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    Replica {
        grpc_addr,
        admin_addr,
        stop: Some(stop),
        task: Some(task),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A service whose config `tweak` adjusts (delays, limits) before it builds.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let postgres = Postgres::start().await.expect("postgres starts");
    let database_url = postgres.fresh_database().await.expect("fresh database");
    let nats = Nats::start().await.expect("nats starts");
    let mut config = config(&database_url, &nats);
    tweak(&mut config);
    let replica = start(config).await;
    let channel = Channel::from_shared(format!("http://{}", replica.grpc_addr))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects");
    let db = PgPool::connect(&database_url).await.expect("test pool");
    let js = shop_events::connect(&nats.url(), "orders-test")
        .await
        .expect("nats connects");
    // The orders service's relay provisions its stream; here the test is the producer.
    StreamSpec::for_context("orders")
        .ensure(&js)
        .await
        .expect("SHOP_ORDERS");
    TestApp {
        client: ShippingServiceClient::new(channel.clone()),
        channel,
        admin_addr: replica.admin_addr,
        db,
        database_url,
        publisher: EventPublisher::new(js.clone()),
        js,
        nats,
        _postgres: postgres,
        replica: Some(replica),
    }
}

/// A confirmed order of `lines` (product, quantity) to Berlin, in EUR.
pub fn order_confirmed(order_id: Uuid, lines: &[(Uuid, i32)]) -> OrderConfirmed {
    OrderConfirmed {
        order_id: order_id.to_string(),
        customer_id: Uuid::now_v7().to_string(),
        lines: lines
            .iter()
            .map(|(product, quantity)| OrderLine {
                product_id: product.to_string(),
                sku: "MUG-1".into(),
                name: "Mug".into(),
                quantity: *quantity,
                unit_price: Some(Money {
                    units: 9,
                    nanos: 0,
                    currency_code: "EUR".into(),
                }),
                line_total: None,
            })
            .collect(),
        total: Some(Money {
            units: 9,
            nanos: 0,
            currency_code: "EUR".into(),
        }),
        shipping_address: Some(berlin()),
        payment_id: Uuid::now_v7().to_string(),
        reservation_id: Uuid::now_v7().to_string(),
        version: 5,
        occurred_at: None,
    }
}

/// An address in Germany, the warehouse's own country.
pub fn berlin() -> PostalAddress {
    PostalAddress {
        recipient_name: "Ada Lovelace".into(),
        line1: "Unter den Linden 1".into(),
        line2: String::new(),
        city: "Berlin".into(),
        region: String::new(),
        postal_code: "10117".into(),
        country_code: "DE".into(),
    }
}

impl TestApp {
    /// Stops the service and waits for it to drain.
    pub async fn shutdown(mut self) {
        if let Some(replica) = self.replica.take() {
            replica.shutdown().await;
        }
    }

    /// Stops the running service (the database and NATS stay).
    pub async fn stop_service(&mut self) {
        if let Some(replica) = self.replica.take() {
            replica.shutdown().await;
        }
    }

    /// Starts one more shipping process on the same database and NATS.
    pub async fn start_replica(&self, tweak: impl FnOnce(&mut Config)) -> Replica {
        let mut config = config(&self.database_url, &self.nats);
        tweak(&mut config);
        start(config).await
    }

    /// Publishes `envelope` into SHOP_ORDERS as the orders service's relay would.
    pub async fn publish_envelope<E: prost::Message + prost::Name>(
        &self,
        envelope: &EventEnvelope<E>,
    ) -> Published {
        self.publisher.publish(envelope).await.expect("published")
    }

    /// Publishes `event` under a fresh event id; returns the id.
    pub async fn publish<E: prost::Message + prost::Name>(&self, event: E) -> Uuid {
        let envelope = EventEnvelope::new(event);
        self.publish_envelope(&envelope).await;
        envelope.id
    }

    /// Whether the consumer's inbox holds `event_id` (the event was applied, or skipped as a
    /// duplicate of what was).
    pub async fn applied(&self, event_id: Uuid) -> bool {
        shop_events::Inbox::new(shipping::CONSUMER_DURABLE)
            .contains(&self.db, event_id)
            .await
            .expect("inbox readable")
    }

    /// Waits until `event_id` is in the consumer's inbox.
    pub async fn wait_applied(&self, event_id: Uuid) {
        wait_until(PATIENCE, || self.applied(event_id))
            .await
            .expect("the event is applied");
    }

    /// Waits until the durable consumer has settled everything in SHOP_ORDERS.
    pub async fn wait_consumer_idle(&self) {
        let js = self.js.clone();
        wait_until(PATIENCE, || {
            let js = js.clone();
            async move {
                let Ok(stream) = js.get_stream("SHOP_ORDERS").await else {
                    return false;
                };
                let Ok(mut consumer) = stream
                    .get_consumer::<consumer::pull::Config>(shipping::CONSUMER_DURABLE)
                    .await
                else {
                    return false;
                };
                consumer
                    .info()
                    .await
                    .is_ok_and(|info| info.num_pending == 0 && info.num_ack_pending == 0)
            }
        })
        .await
        .expect("the consumer settles every message");
    }

    /// GetShipment by order id.
    pub async fn shipment_of(&self, order_id: Uuid) -> Result<Shipment, tonic::Status> {
        self.client
            .clone()
            .get_shipment(GetShipmentRequest {
                lookup: Some(Lookup::OrderId(order_id.to_string())),
            })
            .await
            .map(|r| r.into_inner().shipment.expect("shipment in response"))
    }

    /// Waits until order `order_id` has a shipment in `status`.
    pub async fn wait_for_status(&self, order_id: Uuid, status: ShipmentStatus) -> Shipment {
        let found = wait_for(PATIENCE, || async {
            self.shipment_of(order_id)
                .await
                .ok()
                .filter(|s| s.status == status as i32)
        })
        .await;
        assert!(found.is_ok(), "order {order_id} reaches {status:?}");
        found.unwrap()
    }

    /// Every event published on `subject` so far, decoded, in stream order. Waits first until
    /// the outbox has nothing left to publish, so nothing committed is missed.
    pub async fn published<E: prost::Message + Default>(&self, subject: &str) -> Vec<E> {
        let db = self.db.clone();
        wait_until(PATIENCE, || {
            let db = db.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL",
                )
                .fetch_one(&db)
                .await
                .is_ok_and(|n| n == 0)
            }
        })
        .await
        .expect("outbox drained");
        read_stream(&self.js, "SHOP_SHIPPING", subject)
            .await
            .into_iter()
            .map(|(_, payload)| E::decode(payload).expect("event decodes"))
            .collect()
    }

    /// The headers of every dead letter in SHOP_DLQ.
    pub async fn dead_letters(&self) -> Vec<BTreeMap<String, String>> {
        read_stream(&self.js, shop_events::provision::DLQ_STREAM, "shop.dlq.>")
            .await
            .into_iter()
            .map(|(headers, _)| headers)
            .collect()
    }
}

/// Every OrderConfirmed in SHOP_ORDERS (what the consumer was given), in stream order.
pub async fn read_orders(app: &TestApp) -> Vec<OrderConfirmed> {
    read_stream(&app.js, "SHOP_ORDERS", "shop.orders.v1.order_confirmed")
        .await
        .into_iter()
        .map(|(_, payload)| OrderConfirmed::decode(payload).expect("event decodes"))
        .collect()
}

/// Every message of `stream` on `subject`, with its headers, in stream order.
async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Vec<(BTreeMap<String, String>, bytes::Bytes)> {
    let Ok(stream) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let mut consumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: subject.to_owned(),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let pending = consumer.info().await.expect("consumer info").num_pending;
    if pending == 0 {
        return Vec::new();
    }
    let mut messages = consumer
        .batch()
        .max_messages(usize::try_from(pending).expect("small"))
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("batch");
    let mut out = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.expect("message");
        let headers = message
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|(name, values)| {
                let value = values.first().map(|v| v.as_str().to_owned());
                (name.to_string(), value.unwrap_or_default())
            })
            .collect();
        out.push((headers, message.payload.clone()));
    }
    out
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

/// The `ErrorInfo` reason and `status` metadata of `status`, if any.
pub fn error_info(status: &tonic::Status) -> Option<(String, String)> {
    use tonic_types::StatusExt as _;
    let details = status.get_error_details();
    let info = details.error_info()?;
    Some((
        info.reason.clone(),
        info.metadata.get("status").cloned().unwrap_or_default(),
    ))
}
