//! The whole CLI against a real mesh: `up --detach` in a throwaway state directory on free
//! ports, then `status`, `logs`, `demo`, `check`, `dlq list`, `load` and `down`, checking that every
//! process (the supervisor too) is gone at the end.
//!
//! The orders service lands in its own branch: until `services/orders` exists the test checks
//! that `demo` skips the orders, and once it does, that the three demo orders end as expected
//! with their saga timelines, that `status` shows saga counts and that a PlaceOrder load has no
//! failures.
//!
//! `up` runs `cargo build -p identity -p catalog -p inventory -p notifications …` itself, exactly as an
//! operator's `meshctl up` does: cargo does not build the binaries of dependencies, so a
//! dev-dependency on the service crates would not provide them. When the binaries are fresh
//! (after `cargo nextest run --workspace` built them) that build is a no-op check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a failed unwrap is a failed test
#![allow(clippy::print_stdout)] // the commands' output, shown when the test fails

use std::path::Path;
use std::process::{Command, Output};

use meshctl::state::MeshState;
use tempfile::TempDir;

/// A state directory; dropping it runs `meshctl down` so a failed test leaves nothing running.
struct StateDir(TempDir);

impl StateDir {
    fn meshctl(&self, args: &[&str]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .arg("--state-dir")
            .arg(self.0.path())
            .args(args)
            .output()
            .unwrap();
        println!(
            "$ meshctl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = self.meshctl(&["down"]);
    }
}

/// Whether `pid` is gone (a zombie waiting for a reaper counts as gone).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
    })
}

/// Whether the orders service is in this workspace yet (it lands in its own branch); the
/// parts of the test that need it run only then.
fn orders_exists() -> bool {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../services/orders/Cargo.toml")
        .is_file()
}

fn port() -> String {
    shop_testkit::free_port().unwrap().to_string()
}

#[test]
fn up_status_demo_down() {
    let dir = StateDir(tempfile::tempdir().unwrap());
    let mut up = vec![
        "up".to_owned(),
        "--detach".into(),
        "--pg-port".into(),
        port(),
        "--nats-port".into(),
        port(),
        // JSON lines with trace ids, and a line per call in every service (`call finished`).
        "--log-format".into(),
        "json".into(),
        "--rust-log".into(),
        "info,shop_runtime::observe=debug".into(),
    ];
    for name in [
        "identity",
        "catalog",
        "inventory",
        "notifications",
        "payment-processor",
        "payments",
        "orders",
        "shipping",
    ] {
        up.extend(["--port".into(), format!("{name}={}:{}", port(), port())]);
    }
    let up: Vec<&str> = up.iter().map(String::as_str).collect();
    assert!(dir.meshctl(&up).status.success(), "up --detach failed");

    let state = MeshState::load(dir.0.path()).unwrap().expect("state.json");
    let expected = if orders_exists() { 8 } else { 7 };
    assert_eq!(state.services.len(), expected);
    let supervisor = state
        .supervisor_pid
        .expect("a supervisor outlives `up --detach`");
    assert!(!gone(supervisor));

    // Under a loaded machine (the whole suite runs beside it) a service may report not-ready
    // for a moment right after `up`: status exits 1 then. Give it a few tries.
    let mut status = dir.meshctl(&["status"]);
    for _ in 0..20 {
        if status.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        status = dir.meshctl(&["status"]);
    }
    assert!(
        status.status.success(),
        "status: {}",
        String::from_utf8_lossy(&status.stdout)
    );
    let table = String::from_utf8_lossy(&status.stdout);
    // Every service's `/metrics` answered (no `?`); these four call no other service but
    // identity (for the keys of user tokens), whose breaker is closed.
    for service in ["identity", "catalog", "inventory", "notifications"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(service))
            .unwrap_or_else(|| panic!("no {service} row in\n{table}"));
        assert!(
            row.trim_end().ends_with(" identity=closed"),
            "breakers column: {row}"
        );
    }
    // payments calls the processor: its breaker shows (closed, nothing failed yet).
    let payments = table.lines().find(|l| l.starts_with("payments ")).unwrap();
    assert!(
        payments.trim_end().ends_with("payment-processor=closed"),
        "breakers column: {payments}"
    );
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    for column in ["restarts", "outbox", "parked", "lag", "dlq"] {
        assert!(header.contains(&column), "no {column} column: {table}");
    }
    // Shipping serves /admin/state: its outbox backlog is a number, not "-" or "?".
    let shipping: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("shipping "))
        .unwrap()
        .split_whitespace()
        .collect();
    let outbox = header.iter().position(|c| *c == "outbox").unwrap() - 1; // "grpc health"
    assert!(shipping[outbox].parse::<u64>().is_ok(), "{table}");
    assert!(table.contains("supervisor: pid"), "{table}");

    let logs = dir.meshctl(&["logs", "catalog", "-n", "3"]);
    assert!(
        logs.status.success() && !logs.stdout.is_empty(),
        "logs catalog"
    );
    assert!(!dir.meshctl(&["logs", "no-such-service"]).status.success());

    let demo = dir.meshctl(&["demo"]);
    assert!(demo.status.success(), "demo failed");
    let said = String::from_utf8_lossy(&demo.stdout);
    assert!(said.contains("welcome notification arrived"), "{said}");
    if orders_exists() {
        for order in [
            "a mug paid with tok_visa",
            "a mug paid with tok_decline",
            "more lamps than in stock",
        ] {
            let line = said.lines().find(|l| l.contains(order)).unwrap_or("");
            assert!(line.ends_with("(as expected)"), "{order}: {said}");
        }
        assert_eq!(said.matches("saga ").count(), 3, "three timelines: {said}");
        let confirmed = said
            .lines()
            .find(|l| l.contains("a mug paid with tok_visa"))
            .unwrap();
        let order_id = confirmed
            .split(": order ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap();
        trace_spans_every_service_and_logs_share_its_id(&dir, order_id);
        let status = String::from_utf8_lossy(&dir.meshctl(&["status"]).stdout).into_owned();
        assert!(status.contains("orders sagas: running"), "{status}");

        // The invariants hold across the mesh after the demo (orders, payments, inventory,
        // shipping and JetStream read through their own endpoints).
        let check = dir.meshctl(&["check"]);
        let verdict = String::from_utf8_lossy(&check.stdout);
        assert!(check.status.success(), "check found violations: {verdict}");
        assert!(verdict.contains("no violations"), "{verdict}");

        // A rotated signing key: the load's fresh logins are signed by the new key, which
        // orders and notifications have not seen yet and fetch from identity's JWKS.
        let rotate = dir.meshctl(&["rotate-signing-key"]);
        let rotated = String::from_utf8_lossy(&rotate.stdout);
        assert!(rotate.status.success(), "rotate-signing-key: {rotated}");
        assert!(rotated.contains("new signing key: "), "{rotated}");
        assert!(rotated.contains("published keys: "), "{rotated}");

        let load = dir.meshctl(&["load", "--seconds", "2", "--rate", "10"]);
        let report = String::from_utf8_lossy(&load.stdout);
        assert!(
            load.status.success(),
            "PlaceOrder load had failures: {report}"
        );
        assert!(report.contains("OrderService/PlaceOrder"), "{report}");
    } else {
        assert!(said.contains("skipped the orders"), "{said}");
    }
    assert!(
        dir.0.path().join("identity.kek").is_file(),
        "identity's key-encryption key is kept in the state directory"
    );
    let dlq = dir.meshctl(&["dlq", "list"]);
    assert!(dlq.status.success(), "dlq list");

    let load = dir.meshctl(&[
        "load",
        "--scenario",
        "reads",
        "--seconds",
        "1.5",
        "--concurrency",
        "16",
    ]);
    assert!(load.status.success(), "load had failures");
    let report = String::from_utf8_lossy(&load.stdout);
    for rpc in ["CatalogService/ListProducts", "CatalogService/GetProduct"] {
        assert!(report.contains(rpc), "{report}");
    }
    assert!(report.contains("no failures"), "{report}");
    assert!(
        !dir.meshctl(&["load", "--seconds", "0"]).status.success(),
        "a zero duration is refused"
    );

    assert!(dir.meshctl(&["down"]).status.success(), "down");
    let pids = state.services.iter().map(|s| s.pid).chain([
        state.nats.pid,
        state.postgres.pid,
        supervisor,
    ]);
    for pid in pids {
        assert!(gone(pid), "pid {pid} still runs after down");
    }
    assert!(!dir.0.path().join("state.json").exists());
    assert!(
        !dir.meshctl(&["status"]).status.success(),
        "status with nothing running must fail"
    );
    assert!(
        dir.meshctl(&["down"]).status.success(),
        "down is idempotent"
    );
    assert!(Path::new(&dir.0.path().join("logs/identity.log")).exists());
}

/// `meshctl trace ORDER_ID` draws one trace with spans of every service the order touched,
/// its outbox publishes, consumes and saga steps; the JSON log lines of three services name
/// that trace.
fn trace_spans_every_service_and_logs_share_its_id(dir: &StateDir, order_id: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let services = [
        "orders",
        "catalog",
        "inventory",
        "payments",
        "payment-processor",
        "shipping",
        "notifications",
    ];
    let drawn = loop {
        let trace = dir.meshctl(&["trace", order_id]);
        let drawn = String::from_utf8_lossy(&trace.stdout).into_owned();
        let complete = trace.status.success()
            && services.iter().all(|service| {
                drawn
                    .lines()
                    .any(|l| l.split_whitespace().nth(2) == Some(*service))
            })
            && drawn.contains("process shop.shipping");
        if complete {
            break drawn;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every service in the trace of {order_id}:\n{drawn}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    for part in [
        "shop.orders.v1.OrderService/PlaceOrder",
        "send shop.orders.v1.order_confirmed",
        "process shop.orders.v1.order_confirmed",
        "saga order capture",
    ] {
        assert!(drawn.contains(part), "no {part} in\n{drawn}");
    }
    let header = drawn.lines().next().unwrap();
    let trace_id = header
        .strip_prefix("trace ")
        .and_then(|rest| rest.split(':').next())
        .unwrap();
    assert_eq!(trace_id.len(), 32, "{header}");
    assert!(dir.meshctl(&["trace", "--last"]).status.success());

    // JSON log lines of the same request in three services carry its trace id.
    for service in ["orders", "catalog", "inventory"] {
        let log = std::fs::read_to_string(dir.0.path().join("logs").join(format!("{service}.log")))
            .unwrap();
        let line = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["trace_id"] == trace_id)
            .unwrap_or_else(|| panic!("no {service} log line of trace {trace_id}"));
        assert_eq!(line["service"], service, "{line}");
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    }
}
