//! The saga across process failures, with orders as a real child process: killed with SIGKILL
//! between authorize and capture, it resumes after a restart and captures exactly once; a
//! worker frozen (SIGSTOP) past its lease while another replica takes the run over records
//! nothing when it wakes, and no effect is applied twice.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use shop_localinfra::{Signal, signal};
use shop_proto::{
    orders::{Order, OrderStatus},
    processor::OperationKind,
};
use tokio::process::{Child, Command};

use crate::helpers::{Mesh, MeshOptions};

/// An orders process of this mesh.
pub struct OrdersProcess {
    child: Child,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

impl OrdersProcess {
    /// Starts `orders` named `name` with a short lease, and waits until it is ready.
    pub async fn start(mesh: &Mesh, name: &str, log: &std::path::Path) -> Self {
        Self::start_with_env(mesh, name, log, &[]).await
    }

    /// [`Self::start`] with more environment variables.
    pub async fn start_with_env(
        mesh: &Mesh,
        name: &str,
        log: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
        let port = || shop_testkit::free_port().expect("free port");
        let grpc = SocketAddr::from(([127, 0, 0, 1], port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], port()));
        let deps = &mesh.dependencies;
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_orders"))
            .env_clear()
            .env("GRPC_ADDR", grpc.to_string())
            .env("ADMIN_ADDR", admin.to_string())
            .env("DATABASE_URL", &mesh.orders_db)
            .env("MIGRATE_ON_START", "true")
            .env("NATS_URL", mesh.nats.url())
            .env("CATALOG_URL", &deps.catalog_url)
            .env("INVENTORY_URL", &deps.inventory_url)
            .env("PAYMENTS_URL", &deps.payments_url)
            .env("PAYMENTS_TIMEOUT_MS", "1500")
            .env("SAGA_WORKER_NAME", name)
            .env("SAGA_LEASE_SECS", "3")
            .env("SAGA_STEP_TIMEOUT_SECS", "2")
            .env("SAGA_POLL_MS", "200")
            .env("SAGA_MAX_ATTEMPTS", "100")
            .env("SAGA_BASE_BACKOFF_MS", "50")
            .env("SAGA_MAX_BACKOFF_MS", "500")
            .env("SHUTDOWN_DRAIN_SECS", "0")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("orders starts");
        shop_testkit::wait_until(Duration::from_secs(30), || async move {
            matches!(shop_testkit::http_get(admin, "/readyz").await, Ok((200, _)))
        })
        .await
        .expect("orders becomes ready");
        Self { child, grpc, admin }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    fn signal(&self, signal: Signal) {
        signal::send(self.pid(), signal).expect("signal");
    }

    pub async fn kill9(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }
}

/// The order saga run's (lease owner, lease epoch).
async fn lease(mesh: &Mesh, order_id: &str) -> (Option<String>, i64) {
    sqlx::query_as("SELECT lease_owner, lease_epoch FROM saga_runs WHERE id = $1::uuid")
        .bind(order_id)
        .fetch_one(&mesh.orders_pool)
        .await
        .expect("saga run")
}

pub async fn step_done(mesh: &Mesh, order_id: &str, step: &str) -> bool {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM saga_steps WHERE run_id = $1::uuid AND step = $2 \
         AND phase = 'action' AND outcome = 'ok'",
    )
    .bind(order_id)
    .bind(step)
    .fetch_one(&mesh.orders_pool)
    .await
    .expect("steps")
        > 0
}

/// Places an order (one mug, `tok_visa`) and lets its saga go through authorize, then turns
/// the processor hard down so capture cannot: the run is held between the two, authorize
/// recorded. Returns the order.
pub async fn hold_between_authorize_and_capture(mesh: &mut Mesh) -> Order {
    let mug = mesh.product(20, 0, 5).await;
    // Answers take 300 ms: time to stop the processor between authorize and capture.
    mesh.set_behavior(Duration::from_millis(300), 0.0, false)
        .await;
    let order = mesh.place(&[(&mug, 1)], "tok_visa").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while mesh
        .approved(&order.order_id, OperationKind::Authorize)
        .await
        == 0
    {
        assert!(Instant::now() < deadline, "no authorization");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Capture cannot go through now; the saga retries it.
    mesh.set_behavior(Duration::ZERO, 0.0, true).await;
    while !step_done(mesh, &order.order_id, "authorize").await {
        assert!(Instant::now() < deadline, "authorize not recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    order
}

#[tokio::test]
async fn killed_between_authorize_and_capture_the_saga_resumes_and_captures_once() {
    let mut mesh = Mesh::start_with(MeshOptions {
        orders_in_process: false,
        ..MeshOptions::default()
    })
    .await;
    let logs = tempfile::tempdir().expect("tempdir");
    let first = OrdersProcess::start(&mesh, "orders-first", &logs.path().join("first.log")).await;
    mesh.use_orders(first.grpc, first.admin).await;
    let order = hold_between_authorize_and_capture(&mut mesh).await;
    let (_, epoch_before) = lease(&mesh, &order.order_id).await;
    first.kill9().await;
    assert_eq!(
        mesh.approved(&order.order_id, OperationKind::Capture).await,
        0
    );

    mesh.set_behavior(Duration::ZERO, 0.0, false).await;
    let second =
        OrdersProcess::start(&mesh, "orders-second", &logs.path().join("second.log")).await;
    mesh.use_orders(second.grpc, second.admin).await;
    let confirmed = mesh
        .wait_status(
            &order.order_id,
            OrderStatus::Confirmed,
            Duration::from_secs(30),
        )
        .await;
    let (_, epoch_after) = lease(&mesh, &order.order_id).await;
    assert!(epoch_after > epoch_before, "another claim finished the run");
    assert_eq!(
        mesh.approved(&order.order_id, OperationKind::Authorize)
            .await,
        1
    );
    assert_eq!(
        mesh.approved(&order.order_id, OperationKind::Capture).await,
        1,
        "exactly one capture"
    );
    let payment = mesh.payment(&confirmed.payment_id).await;
    assert_eq!(payment.captured_amount, order.total);
    mesh.check_books().await;
    second.kill9().await;
    mesh.finish().await;
}

#[tokio::test]
async fn a_worker_paused_past_its_lease_records_nothing_after_another_took_over() {
    let mut mesh = Mesh::start_with(MeshOptions {
        orders_in_process: false,
        ..MeshOptions::default()
    })
    .await;
    let logs = tempfile::tempdir().expect("tempdir");
    let paused = OrdersProcess::start(&mesh, "orders-paused", &logs.path().join("a.log")).await;
    mesh.use_orders(paused.grpc, paused.admin).await;
    let mug = mesh.product(20, 0, 5).await;
    mesh.set_behavior(Duration::from_millis(300), 0.0, false)
        .await;
    let order = mesh.place(&[(&mug, 1)], "tok_visa").await;
    // Freeze the worker as soon as it holds the run, mid-step.
    let deadline = Instant::now() + Duration::from_secs(20);
    let paused_epoch = loop {
        if let (Some(owner), epoch) = lease(&mesh, &order.order_id).await
            && owner.starts_with("orders-paused")
        {
            paused.signal(Signal::STOP);
            break epoch;
        }
        assert!(Instant::now() < deadline, "never claimed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let frozen_at: time::OffsetDateTime = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mesh.orders_pool)
        .await
        .expect("now");

    let other = OrdersProcess::start(&mesh, "orders-other", &logs.path().join("b.log")).await;
    mesh.use_orders(other.grpc, other.admin).await;
    mesh.wait_status(
        &order.order_id,
        OrderStatus::Confirmed,
        Duration::from_secs(30),
    )
    .await;
    let (owner, epoch) = lease(&mesh, &order.order_id).await;
    assert!(
        epoch > paused_epoch,
        "the other worker claimed the run ({owner:?})"
    );

    // Wake the paused worker: its step finishes, but every write it tries is fenced.
    paused.signal(Signal::CONT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // It may leave a `lease_lost` history row (its attempt, dropped); nothing else.
    let late: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM saga_steps WHERE run_id = $1::uuid AND epoch = $2 \
         AND finished_at > $3 AND outcome <> 'lease_lost'",
    )
    .bind(&order.order_id)
    .bind(paused_epoch)
    .bind(frozen_at)
    .fetch_one(&mesh.orders_pool)
    .await
    .expect("steps");
    assert_eq!(
        late, 0,
        "the paused worker recorded nothing after it was frozen"
    );
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT type FROM order_events WHERE order_id = $1::uuid \
         AND type IN ('Placed', 'Confirmed', 'Cancelled') ORDER BY version",
    )
    .bind(&order.order_id)
    .fetch_all(&mesh.orders_pool)
    .await
    .expect("events");
    assert_eq!(events, ["Placed", "Confirmed"]);
    assert_eq!(
        mesh.approved(&order.order_id, OperationKind::Authorize)
            .await,
        1
    );
    assert_eq!(
        mesh.approved(&order.order_id, OperationKind::Capture).await,
        1
    );
    let stock = mesh.stock(&mug).await;
    assert_eq!(
        (stock.committed, stock.reserved),
        (1, 0),
        "stock taken once"
    );
    mesh.check_books().await;
    paused.kill9().await;
    other.kill9().await;
    mesh.finish().await;
}
