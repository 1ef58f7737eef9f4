//! `spawn_app()`: a processor and a payments service on port 0 with a fresh database, their
//! clients, and the ledger check every test ends with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use payment_processor::BehaviorConfig;
use payments::{App, Config, ProcessorConfig};
use shop_proto::common::Money;
use shop_proto::payments::{
    AuthorizeRequest, CaptureRequest, Payment, payment_service_client::PaymentServiceClient,
};
use shop_proto::processor::{
    Behavior, Decision, GetBehaviorRequest, ListOperationsRequest, OperationKind, OperationResult,
    SetBehaviorRequest, processor_admin_service_client::ProcessorAdminServiceClient,
};
use shop_runtime::{DatabaseConfig, LogFormat, NatsConfig, ServerConfig, TelemetryConfig};
use shop_testkit::{Nats, Postgres};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

type Task = JoinHandle<Result<(), shop_runtime::RuntimeError>>;

pub struct TestApp {
    /// Kept so the server lives as long as the test.
    _postgres: Postgres,
    pub nats: Nats,
    pub pool: sqlx::PgPool,
    pub client: PaymentServiceClient<Channel>,
    pub admin: ProcessorAdminServiceClient<Channel>,
    pub admin_addr: SocketAddr,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<Task>,
}

/// Short timeouts so faults show quickly: a call gets 1.5 s, an attempt 300 ms.
pub fn processor_config(addr: SocketAddr) -> ProcessorConfig {
    ProcessorConfig {
        processor_timeout_ms: 1500,
        processor_attempt_timeout_ms: 300,
        processor_max_attempts: 4,
        processor_breaker_failures: 5,
        processor_breaker_open_ms: 200,
        ..ProcessorConfig::new(format!("http://{addr}"))
    }
}

fn serve<F>(run: impl FnOnce(oneshot::Receiver<()>) -> F) -> (oneshot::Sender<()>, Task)
where
    F: Future<Output = Result<(), shop_runtime::RuntimeError>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    (stop, tokio::spawn(run(stopped)))
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// A processor and payments service; `tune` adjusts how payments calls the processor.
pub async fn spawn_with(tune: impl FnOnce(&mut ProcessorConfig)) -> TestApp {
    let processor = payment_processor::App::build(payment_processor::Config {
        server: ServerConfig::ephemeral(),
        telemetry: TelemetryConfig {
            log_format: LogFormat::Text,
        },
        behavior: BehaviorConfig::default(),
    })
    .await
    .expect("processor builds");
    let processor_addr = processor.grpc_addr();
    let (stop_processor, processor_task) = serve(|stopped| {
        processor.run_until(async {
            let _ = stopped.await;
        })
    });

    let postgres = Postgres::start().await.expect("postgres starts");
    let database_url = postgres.fresh_database().await.expect("fresh database");
    let nats = Nats::start().await.expect("nats starts");
    let mut processor = processor_config(processor_addr);
    tune(&mut processor);
    let app = App::build(Config {
        server: ServerConfig::ephemeral(),
        database: DatabaseConfig::new(&database_url),
        nats: NatsConfig::new(nats.url()),
        telemetry: TelemetryConfig {
            log_format: LogFormat::Text,
        },
        processor,
    })
    .await
    .expect("payments builds");
    let (addr, admin_addr) = (app.grpc_addr(), app.admin_addr());
    let (stop_payments, payments_task) = serve(|stopped| {
        app.run_until(async {
            let _ = stopped.await;
        })
    });
    let connect = |addr: SocketAddr| async move {
        Channel::from_shared(format!("http://{addr}"))
            .expect("valid uri")
            .connect()
            .await
            .expect("connects")
    };
    TestApp {
        _postgres: postgres,
        nats,
        pool: sqlx::PgPool::connect(&database_url).await.expect("db"),
        client: PaymentServiceClient::new(connect(addr).await),
        admin: ProcessorAdminServiceClient::new(connect(processor_addr).await),
        admin_addr,
        stops: vec![stop_payments, stop_processor],
        tasks: vec![payments_task, processor_task],
    }
}

pub fn eur(units: i64, cents: i32) -> Money {
    Money {
        units,
        nanos: cents * 10_000_000,
        currency_code: "EUR".into(),
    }
}

pub fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn authorize_request(key: &str, amount: Money, token: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        idempotency_key: key.into(),
        order_id: uuid(),
        amount: Some(amount),
        customer_id: uuid(),
        payment_method_token: token.into(),
    }
}

pub fn capture_request(key: &str, payment: &Payment, amount: Money) -> CaptureRequest {
    CaptureRequest {
        payment_id: payment.payment_id.clone(),
        amount: Some(amount),
        idempotency_key: key.into(),
    }
}

/// The processor's defaults with these overrides.
pub fn behavior(latency: Duration, failure_rate: f64, hard_down: bool) -> Behavior {
    let defaults = BehaviorConfig::default().behavior().expect("defaults");
    Behavior {
        latency: prost_types::Duration::try_from(latency).ok(),
        failure_rate,
        hard_down,
        decline_tokens: defaults.decline_tokens.into_iter().collect(),
    }
}

impl TestApp {
    /// Waits until the `SHOP_PAYMENTS` stream holds exactly `expected` messages per subject.
    pub async fn wait_for_events(&self, expected: &[(&str, usize)]) {
        let client = async_nats::connect(self.nats.url()).await.expect("nats");
        let js = async_nats::jetstream::new(client);
        let want: BTreeMap<String, usize> = expected
            .iter()
            .map(|(s, n)| ((*s).to_owned(), *n))
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = subjects_in_stream(&js).await;
            if seen == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "events {seen:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn authorize(&mut self, key: &str, amount: Money) -> Payment {
        self.client
            .authorize(authorize_request(key, amount, "tok_visa"))
            .await
            .expect("authorize")
            .into_inner()
            .payment
            .expect("payment")
    }

    pub async fn set_behavior(&mut self, behavior: Behavior) {
        self.admin
            .set_behavior(SetBehaviorRequest {
                behavior: Some(behavior),
            })
            .await
            .expect("set behavior");
    }

    pub async fn processor_requests(&mut self) -> u64 {
        self.admin
            .get_behavior(GetBehaviorRequest {})
            .await
            .expect("get behavior")
            .into_inner()
            .requests_total
    }

    pub async fn processor_operations(&mut self) -> Vec<OperationResult> {
        self.admin
            .list_operations(ListOperationsRequest {})
            .await
            .expect("list operations")
            .into_inner()
            .operations
    }

    /// The processor dependency's breaker state in payments' `/metrics` (1 = in that state).
    pub async fn breaker_is(&self, state: &str) -> bool {
        let (_, body) = shop_testkit::http_get(self.admin_addr, "/metrics")
            .await
            .expect("metrics");
        body.contains(&format!(
            "shop_client_breaker_state{{dependency=\"payment-processor\",state=\"{state}\"}} 1"
        ))
    }

    /// Checks the books, then stops both services.
    pub async fn finish(mut self) {
        self.check_ledger().await;
        self.stop().await;
    }

    /// Stops both services without checking the books (for a test that broke them on purpose).
    pub async fn stop(mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            task.await.expect("task").expect("stops cleanly");
        }
    }

    /// Every payment's state agrees with the sums of its ledger entries, and the ledger holds
    /// exactly the movements the processor approved: one row per key, same amounts.
    pub async fn check_ledger(&mut self) {
        let payments: Vec<(uuid::Uuid, String, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT p.id, p.status, p.authorized_minor, \
             COALESCE(sum(l.amount_minor) FILTER (WHERE l.kind = 'authorization'), 0)::BIGINT, \
             COALESCE(sum(l.amount_minor) FILTER (WHERE l.kind = 'capture'), 0)::BIGINT, \
             COALESCE(sum(l.amount_minor) FILTER (WHERE l.kind = 'void'), 0)::BIGINT, \
             COALESCE(sum(l.amount_minor) FILTER (WHERE l.kind = 'refund'), 0)::BIGINT \
             FROM payments p LEFT JOIN ledger_entries l ON l.payment_id = p.id GROUP BY p.id",
        )
        .fetch_all(&self.pool)
        .await
        .expect("ledger sums");
        for (id, status, authorized, held, captured, voided, refunded) in &payments {
            let (authorized, held, captured, voided, refunded) =
                (*authorized, *held, *captured, *voided, *refunded);
            let consistent = match status.as_str() {
                "declined" => held == 0 && captured == 0 && voided == 0 && refunded == 0,
                "authorized" => held == authorized && captured == 0 && voided == 0 && refunded == 0,
                "voided" => held == authorized && voided == authorized && captured == 0,
                "captured" => held == authorized && captured > 0 && refunded == 0 && voided == 0,
                "partially_refunded" => held == authorized && refunded > 0 && refunded < captured,
                "refunded" => held == authorized && refunded == captured && captured > 0,
                _ => false,
            };
            assert!(
                consistent && captured <= authorized,
                "payment {id} is {status} but its ledger says authorization {held}, capture \
                 {captured}, void {voided}, refund {refunded} of {authorized}"
            );
        }
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT idempotency_key, kind, amount_minor FROM ledger_entries")
                .fetch_all(&self.pool)
                .await
                .expect("ledger rows");
        let ledger: BTreeMap<String, (String, i64)> = rows
            .into_iter()
            .map(|(key, kind, minor)| (key, (kind, minor)))
            .collect();
        let mut approved = BTreeMap::new();
        for op in self.processor_operations().await {
            if op.decision != Decision::Approved as i32 {
                continue;
            }
            let kind = match OperationKind::try_from(op.kind) {
                Ok(OperationKind::Authorize) => "authorization",
                Ok(OperationKind::Capture) => "capture",
                Ok(OperationKind::Void) => "void",
                Ok(OperationKind::Refund) => "refund",
                _ => "unknown",
            };
            let amount = op.amount.unwrap_or_default();
            let minor = match amount.currency_code.as_str() {
                "JPY" | "KRW" | "ISK" => amount.units,
                _ => amount.units * 100 + i64::from(amount.nanos / 10_000_000),
            };
            let previous = approved.insert(op.idempotency_key.clone(), (kind.to_owned(), minor));
            assert!(
                previous.is_none(),
                "processor applied {} twice",
                op.idempotency_key
            );
        }
        assert_eq!(
            ledger, approved,
            "the ledger and the processor disagree about the movements"
        );
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

/// How many messages `SHOP_PAYMENTS` holds per subject (empty if it does not exist yet).
async fn subjects_in_stream(js: &async_nats::jetstream::Context) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    let Ok(mut stream) = js.get_stream("SHOP_PAYMENTS").await else {
        return seen;
    };
    let Ok(info) = stream.info().await else {
        return seen;
    };
    for seq in 1..=info.state.last_sequence {
        if let Ok(message) = stream.get_raw_message(seq).await {
            *seen.entry(message.subject.to_string()).or_insert(0) += 1;
        }
    }
    seen
}
