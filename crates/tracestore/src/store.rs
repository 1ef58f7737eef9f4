//! The spans received, grouped by trace, bounded.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span, status};
use serde::{Deserialize, Serialize};

/// One span as kept: ids in lowercase hex, times in Unix nanoseconds, attribute values as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// Empty for a root.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: String,
    /// `service.name` of the process that sent it.
    pub service: String,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
    /// The span's status is an error.
    pub error: bool,
    /// The status message, if any.
    pub status_message: String,
    /// Attributes, values as text.
    pub attributes: BTreeMap<String, String>,
}

impl StoredSpan {
    /// How long it took, in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// How much is kept.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Traces kept; the one seen first goes when a new one arrives beyond it.
    pub max_traces: usize,
    /// Spans kept per trace; later ones are counted, not kept.
    pub max_spans_per_trace: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_traces: 2_000,
            max_spans_per_trace: 2_000,
        }
    }
}

#[derive(Debug, Default)]
struct Trace {
    spans: Vec<StoredSpan>,
    dropped: usize,
}

#[derive(Debug, Default)]
struct Inner {
    traces: HashMap<String, Trace>,
    /// Trace ids, first seen first.
    order: VecDeque<String>,
}

/// The received traces. Cheap to clone; clones share the spans.
#[derive(Debug, Clone, Default)]
pub struct SpanStore {
    inner: Arc<Mutex<Inner>>,
    limits: StoreLimits,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| text(Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn kind(span: &Span) -> &'static str {
    match span.kind() {
        span::SpanKind::Server => "server",
        span::SpanKind::Client => "client",
        span::SpanKind::Producer => "producer",
        span::SpanKind::Consumer => "consumer",
        span::SpanKind::Internal | span::SpanKind::Unspecified => "internal",
    }
}

impl SpanStore {
    /// An empty store keeping at most `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            inner: Arc::default(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the spans of one OTLP export.
    pub fn add(&self, request: &ExportTraceServiceRequest) {
        let mut spans = Vec::new();
        for resource in &request.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .map(|kv| text(kv.value.as_ref()))
                .unwrap_or_default();
            for scope in &resource.scope_spans {
                for span in &scope.spans {
                    let (error, status_message) = span.status.as_ref().map_or_else(
                        || (false, String::new()),
                        |s| (s.code() == status::StatusCode::Error, s.message.clone()),
                    );
                    spans.push(StoredSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name.clone(),
                        kind: kind(span).to_owned(),
                        service: service.clone(),
                        start_ns: span.start_time_unix_nano,
                        end_ns: span.end_time_unix_nano,
                        error,
                        status_message,
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        self.insert(spans);
    }

    /// Keeps `spans`.
    pub fn insert(&self, spans: Vec<StoredSpan>) {
        let mut inner = self.lock();
        for span in spans {
            if !inner.traces.contains_key(&span.trace_id) {
                while inner.order.len() >= self.limits.max_traces.max(1) {
                    match inner.order.pop_front() {
                        Some(oldest) => {
                            inner.traces.remove(&oldest);
                        }
                        None => break,
                    }
                }
                inner.order.push_back(span.trace_id.clone());
            }
            let trace = inner.traces.entry(span.trace_id.clone()).or_default();
            if trace.spans.len() < self.limits.max_spans_per_trace {
                trace.spans.push(span);
            } else {
                trace.dropped += 1;
            }
        }
    }

    /// The spans of trace `trace_id`, by start time.
    pub fn trace(&self, trace_id: &str) -> Vec<StoredSpan> {
        let inner = self.lock();
        let mut spans = inner
            .traces
            .get(trace_id)
            .map(|t| t.spans.clone())
            .unwrap_or_default();
        spans.sort_by_key(|s| s.start_ns);
        spans
    }

    /// The traces with a span whose attribute `key` is `value`, latest first.
    pub fn find(&self, key: &str, value: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .rev()
            .filter(|id| {
                inner
                    .traces
                    .get(*id)
                    .is_some_and(|t| t.spans.iter().any(|s| s.attribute(key) == Some(value)))
            })
            .cloned()
            .collect()
    }

    /// The trace whose root span is named `root` and started last.
    pub fn last_with_root(&self, root: &str) -> Option<String> {
        let inner = self.lock();
        inner
            .traces
            .iter()
            .filter_map(|(id, t)| {
                t.spans
                    .iter()
                    .find(|s| s.parent_span_id.is_empty() && s.name == root)
                    .map(|s| (s.start_ns, id))
            })
            .max()
            .map(|(_, id)| id.clone())
    }

    /// Traces kept now.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether nothing was received (or everything dropped).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    pub(crate) fn span(trace: &str, id: &str, parent: &str, name: &str, start: u64) -> StoredSpan {
        StoredSpan {
            trace_id: trace.to_owned(),
            span_id: id.to_owned(),
            parent_span_id: parent.to_owned(),
            name: name.to_owned(),
            kind: "internal".to_owned(),
            service: "svc".to_owned(),
            start_ns: start,
            end_ns: start + 10,
            error: false,
            status_message: String::new(),
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn keeps_the_latest_traces_and_finds_them() {
        let store = SpanStore::new(StoreLimits {
            max_traces: 2,
            max_spans_per_trace: 2,
        });
        let mut step = span("t1", "b", "a", "saga order reserve", 5);
        step.attributes.insert("saga.id".into(), "order-1".into());
        store.insert(vec![span("t1", "a", "", "PlaceOrder", 1), step]);
        store.insert(vec![span("t2", "c", "", "PlaceOrder", 7)]);
        assert_eq!(store.find("saga.id", "order-1"), vec!["t1"]);
        assert_eq!(store.last_with_root("PlaceOrder").as_deref(), Some("t2"));
        // Past the span limit: counted, not kept.
        store.insert(vec![span("t1", "x", "a", "late", 9)]);
        assert_eq!(store.trace("t1").len(), 2);
        // A third trace pushes out the first.
        store.insert(vec![span("t3", "d", "", "Other", 8)]);
        assert_eq!(store.len(), 2);
        assert!(store.trace("t1").is_empty());
        assert!(store.find("saga.id", "order-1").is_empty());
    }

    #[test]
    fn reads_an_otlp_export() {
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};
        let kv = |k: &str, v: any_value::Value| KeyValue {
            key: k.to_owned(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("orders".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01; 8],
                        name: "shop.orders.v1.OrderService/PlaceOrder".into(),
                        kind: span::SpanKind::Server as i32,
                        start_time_unix_nano: 100,
                        end_time_unix_nano: 350,
                        attributes: vec![kv(
                            "rpc.grpc.status_code",
                            any_value::Value::IntValue(13),
                        )],
                        status: Some(Status {
                            code: status::StatusCode::Error as i32,
                            message: "boom".into(),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let store = SpanStore::default();
        store.add(&request);
        let spans = store.trace(&"ab".repeat(16));
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.span_id, "0101010101010101");
        assert!(s.parent_span_id.is_empty());
        assert_eq!((s.kind.as_str(), s.service.as_str()), ("server", "orders"));
        assert_eq!(s.duration_ns(), 250);
        assert!(s.error);
        assert_eq!(s.attribute("rpc.grpc.status_code"), Some("13"));
    }
}
