//! One trace per order, across every process and every event: the test process runs catalog,
//! inventory, payments, the processor, shipping and notifications exporting to an in-process
//! OTLP receiver; orders runs as a child process exporting to the same receiver, and is killed
//! with SIGKILL mid-saga and started again. The saga steps of the second process belong to the
//! order's trace, because the context is stored with the run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use shop_proto::orders::OrderStatus;

use crate::crash::{OrdersProcess, hold_between_authorize_and_capture};
use crate::helpers::{Mesh, MeshOptions};

const PLACE_ORDER: &str = "shop.orders.v1.OrderService/PlaceOrder";

/// Spans received so far, by span id.
struct Received {
    collector: FakeCollectorServer,
    spans: BTreeMap<String, ExportedSpan>,
}

impl Received {
    /// Takes what the receiver holds (its queue is bounded: exports wait while it is full).
    async fn poll(&mut self) {
        loop {
            let spans = self
                .collector
                .exported_spans(1, Duration::from_millis(100))
                .await;
            if spans.is_empty() {
                return;
            }
            for span in spans {
                self.spans.insert(span.span_id.clone(), span);
            }
        }
    }

    fn trace(&self, trace_id: &str) -> Vec<&ExportedSpan> {
        self.spans
            .values()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Polls (flushing this process's spans) until `done` holds for what was received.
    async fn until(
        &mut self,
        provider: &opentelemetry_sdk::trace::SdkTracerProvider,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let flushing = provider.clone();
            let flushed = tokio::task::spawn_blocking(move || flushing.force_flush());
            self.poll().await;
            // A flush may time out while the receiver's queue is full; the next one catches up.
            let _ = flushed.await.expect("flush");
            self.poll().await;
            if done(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; spans: {:#?}",
                self.spans
                    .values()
                    .map(|s| format!(
                        "{} {} {} parent={}",
                        s.name, s.kind, s.trace_id, s.parent_span_id
                    ))
                    .collect::<BTreeSet<_>>()
            );
        }
    }
}

/// The value of attribute `key`, as text. The receiver keeps values in their `Debug` form,
/// e.g. `Some(AnyValue { value: Some(StringValue("x")) })`.
fn attr<'a>(span: &'a ExportedSpan, key: &str) -> Option<&'a str> {
    let debug = span.attributes.get(key)?;
    for (open, close) in [
        ("StringValue(\"", "\")"),
        ("IntValue(", ")"),
        ("BoolValue(", ")"),
    ] {
        if let Some(start) = debug.find(open) {
            let rest = &debug[start + open.len()..];
            return rest.find(close).map(|end| &rest[..end]);
        }
    }
    None
}

fn has(spans: &[&ExportedSpan], kind: &str, test: impl Fn(&ExportedSpan) -> bool) -> bool {
    spans.iter().any(|s| s.kind == kind && test(s))
}

fn server_of(spans: &[&ExportedSpan], service: &str) -> bool {
    has(spans, "SPAN_KIND_SERVER", |s| {
        attr(s, "rpc.service") == Some(service) && attr(s, "rpc.system") == Some("grpc")
    })
}

fn consumed_by(spans: &[&ExportedSpan], durable_prefix: &str) -> bool {
    has(spans, "SPAN_KIND_CONSUMER", |s| {
        attr(s, "messaging.system") == Some("nats")
            && attr(s, "messaging.consumer.group.name")
                .is_some_and(|g| g.starts_with(durable_prefix))
    })
}

fn step(spans: &[&ExportedSpan], name: &str) -> bool {
    spans.iter().any(|s| {
        attr(s, "saga.step") == Some(name)
            && attr(s, "saga.phase") == Some("action")
            && attr(s, "saga.outcome") == Some("ok")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_order_is_one_trace_across_services_events_and_a_restart_of_orders() {
    let collector = FakeCollectorServer::start().await.expect("collector");
    let endpoint = collector.endpoint();
    let provider = shop_runtime::telemetry::tracer_provider_to("mesh-under-test", Some(&endpoint))
        .expect("provider");
    assert!(
        shop_runtime::telemetry::install(
            "mesh-under-test",
            shop_runtime::LogFormat::Text,
            Some(&provider)
        ),
        "the only subscriber of this test process"
    );
    let mut received = Received {
        collector,
        spans: BTreeMap::new(),
    };

    let mut mesh = Mesh::start_with(MeshOptions {
        orders_in_process: false,
        notifications: true,
        ..MeshOptions::default()
    })
    .await;
    let logs = tempfile::tempdir().expect("tempdir");
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let first =
        OrdersProcess::start_with_env(&mesh, "orders-first", &logs.path().join("first.log"), &otel)
            .await;
    mesh.use_orders(first.grpc, first.admin).await;
    // As in the crash test: authorize goes through, capture cannot until the restart.
    let order = hold_between_authorize_and_capture(&mut mesh).await;
    // The first process has exported the request's span and its finished steps.
    received
        .until(&provider, "the first process's spans", |r| {
            r.spans.values().any(|s| {
                s.name == PLACE_ORDER
                    && r.trace(&s.trace_id)
                        .iter()
                        .any(|c| attr(c, "saga.step") == Some("authorize"))
            })
        })
        .await;
    let killed_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    first.kill9().await;

    mesh.set_behavior(Duration::ZERO, 0.0, false).await;
    let second = OrdersProcess::start_with_env(
        &mesh,
        "orders-second",
        &logs.path().join("second.log"),
        &otel,
    )
    .await;
    mesh.use_orders(second.grpc, second.admin).await;
    mesh.wait_status(
        &order.order_id,
        OrderStatus::Confirmed,
        Duration::from_secs(30),
    )
    .await;

    let root = received
        .spans
        .values()
        .find(|s| s.name == PLACE_ORDER && s.kind == "SPAN_KIND_SERVER")
        .expect("the PlaceOrder span")
        .clone();
    let trace_id = root.trace_id.clone();
    received
        .until(&provider, "every part of the order's trace", |r| {
            let t = r.trace(&trace_id);
            server_of(&t, "shop.catalog.v1.CatalogService")
                && server_of(&t, "shop.inventory.v1.InventoryService")
                && server_of(&t, "shop.payments.v1.PaymentService")
                && has(&t, "SPAN_KIND_PRODUCER", |s| {
                    attr(s, "messaging.destination.name")
                        .is_some_and(|d| d.starts_with("shop.orders"))
                })
                && consumed_by(&t, "shipping")
                && consumed_by(&t, "notifications")
                && ["reserve", "authorize", "capture", "commit", "confirm"]
                    .iter()
                    .all(|name| step(&t, name))
        })
        .await;

    let spans = received.trace(&trace_id);
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    // One trace: the request is its only root, and every other span hangs off a span of it.
    // A span the killed process had not exported yet may be missing; only spans that began
    // before the kill can have lost their parent that way.
    let roots: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(roots, vec![PLACE_ORDER], "one root");
    for span in &spans {
        if span.parent_span_id.is_empty() {
            continue;
        }
        assert!(
            ids.contains(span.parent_span_id.as_str())
                || u128::from(span.start_time_unix_nano) < killed_at,
            "{} has a parent outside the trace",
            span.name
        );
    }
    // The catalog call: client span in orders, server span in catalog, its child.
    let catalog_server = spans
        .iter()
        .find(|s| {
            s.kind == "SPAN_KIND_SERVER"
                && attr(s, "rpc.service") == Some("shop.catalog.v1.CatalogService")
        })
        .expect("catalog's span");
    let catalog_client = received
        .spans
        .get(&catalog_server.parent_span_id)
        .expect("the client span it hangs off");
    assert_eq!(catalog_client.kind, "SPAN_KIND_CLIENT");
    assert_eq!(attr(catalog_client, "peer.service"), Some("catalog"));
    assert_eq!(attr(catalog_server, "rpc.grpc.status_code"), Some("0"));
    // Steps after the restart hang off the request's context, stored with the run.
    let capture = spans
        .iter()
        .find(|s| attr(s, "saga.step") == Some("capture") && attr(s, "saga.outcome") == Some("ok"))
        .expect("the capture that went through");
    assert!(
        u128::from(capture.start_time_unix_nano) > killed_at,
        "captured by the second process"
    );
    assert!(ids.contains(capture.parent_span_id.as_str()));
    // A consumer's span is the child of the publish that sent its message.
    let shipping = spans
        .iter()
        .find(|s| {
            s.kind == "SPAN_KIND_CONSUMER"
                && attr(s, "messaging.consumer.group.name")
                    .is_some_and(|g| g.starts_with("shipping"))
        })
        .expect("shipping's consumer");
    let publish = received
        .spans
        .get(&shipping.parent_span_id)
        .expect("the publish span");
    assert_eq!(publish.kind, "SPAN_KIND_PRODUCER");
    assert_eq!(
        attr(publish, "messaging.destination.name"),
        attr(shipping, "messaging.destination.name")
    );

    second.kill9().await;
    mesh.finish().await;
}
