//! W3C trace context for `tracing` spans bridged to OpenTelemetry (`tracing-opentelemetry`).
//!
//! One trace has to cross three kinds of boundary in the mesh, and each has a pair of functions
//! here:
//!
//! - **gRPC metadata** (HTTP/2 headers): [`inject_headers`] on the client side, [`set_parent`]
//!   with [`HeaderCarrier`] on the server side.
//! - **NATS headers** and **stored rows** (an outbox row's headers, a saga run's context): both
//!   are string maps, so [`current_context`] captures the current span's context as
//!   [`TraceFields`] (what the row keeps) and [`set_parent`] with any [`FieldSource`] restores it
//!   as a span's parent, also in another process long after (a saga run resumed after a
//!   restart, an event relayed later).
//!
//! The propagator is fixed (W3C Trace Context + W3C Baggage) rather than read from
//! OpenTelemetry's global, so that what a service writes never depends on whether
//! `opentelemetry::global` was set up in that process. Without the OpenTelemetry layer
//! installed (tracing export off), spans carry no context: nothing is injected and
//! [`set_parent`] is a no-op, so the functions are always safe to call.
//!
//! Kept out of the service kit so that libraries (`shop-events`, `shop-outbox`, `shop-saga`)
//! can carry context without depending on it.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// `traceparent`: version, trace id, parent span id, flags.
pub const TRACEPARENT: &str = "traceparent";
/// `tracestate`: vendor-specific trace data.
pub const TRACESTATE: &str = "tracestate";
/// `baggage`: application key/values carried with the trace.
pub const BAGGAGE: &str = "baggage";

/// Every header this crate reads or writes.
pub const FIELDS: [&str; 3] = [TRACEPARENT, TRACESTATE, BAGGAGE];

static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
});

/// The propagation fields of a span context, as stored with a row or sent as headers: empty
/// when there was no sampled-or-not trace to continue.
pub type TraceFields = BTreeMap<String, String>;

/// Something the propagation fields can be read from.
pub trait FieldSource {
    /// The value of `key` (lower case), if present and text.
    fn field(&self, key: &str) -> Option<&str>;
}

impl FieldSource for http::HeaderMap {
    fn field(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.to_str().ok())
    }
}

impl FieldSource for BTreeMap<String, String> {
    fn field(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<T: FieldSource + ?Sized> FieldSource for &T {
    fn field(&self, key: &str) -> Option<&str> {
        (**self).field(key)
    }
}

/// Reads any [`FieldSource`] for the propagator.
pub struct HeaderCarrier<'a, S: ?Sized>(pub &'a S);

impl<S: FieldSource + ?Sized> Extractor for HeaderCarrier<'_, S> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.field(key)
    }

    fn keys(&self) -> Vec<&str> {
        FIELDS
            .iter()
            .copied()
            .filter(|k| self.0.field(k).is_some())
            .collect()
    }
}

struct HeaderWriter<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct MapWriter<'a>(&'a mut TraceFields);

impl Injector for MapWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// The OpenTelemetry context of `span` (empty without the OpenTelemetry layer).
fn otel_context(span: &tracing::Span) -> opentelemetry::Context {
    span.context()
}

/// Whether `span` has an OpenTelemetry span context worth propagating.
fn has_context(cx: &opentelemetry::Context) -> bool {
    cx.span().span_context().is_valid()
}

/// Writes the context of `span` into `headers` (gRPC metadata of an outgoing call), replacing
/// any propagation headers already there; leaves them alone if `span` has no context.
pub fn inject_headers(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let cx = otel_context(span);
    if has_context(&cx) {
        PROPAGATOR.inject_context(&cx, &mut HeaderWriter(headers));
    }
}

/// The context of `span` as fields to store or send; empty if it has none.
pub fn context_fields(span: &tracing::Span) -> TraceFields {
    let cx = otel_context(span);
    let mut fields = TraceFields::new();
    if has_context(&cx) {
        PROPAGATOR.inject_context(&cx, &mut MapWriter(&mut fields));
    }
    fields
}

/// [`context_fields`] of the current span.
pub fn current_context() -> TraceFields {
    context_fields(&tracing::Span::current())
}

/// Makes the context in `source` the parent of `span` (a span just created, not yet entered).
/// Returns whether `source` held a valid context; without one `span` keeps its own parent
/// (the current span when it was created, or none).
pub fn set_parent(span: &tracing::Span, source: &(impl FieldSource + ?Sized)) -> bool {
    let cx = PROPAGATOR.extract(&HeaderCarrier(source));
    if !has_context(&cx) {
        return false;
    }
    // Fails only if the span is disabled or already started; either way it keeps its parent.
    let _ = span.set_parent(cx);
    true
}

/// The trace id and span id of `span` as lowercase hex, if it has a context.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    let cx = otel_context(span);
    let otel = cx.span();
    let context = otel.span_context();
    context.is_valid().then(|| {
        (
            context.trace_id().to_string(),
            context.span_id().to_string(),
        )
    })
}

/// The trace id of `span` if its trace is sampled (recorded and exported), for exemplars that
/// point at a trace a backend has.
pub fn sampled_trace_id(span: &tracing::Span) -> Option<String> {
    let cx = otel_context(span);
    let otel = cx.span();
    let context = otel.span_context();
    (context.is_valid() && context.is_sampled()).then(|| context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with_otel<R>(f: impl FnOnce() -> R) -> R {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn a_context_read_from_headers_continues_in_the_child_and_its_injected_headers() {
        with_otel(|| {
            let mut incoming = http::HeaderMap::new();
            incoming.insert(TRACEPARENT, PARENT.parse().unwrap());
            incoming.insert(BAGGAGE, "tenant=t1".parse().unwrap());
            let span = tracing::info_span!("server");
            assert!(set_parent(&span, &incoming));
            let (trace_id, span_id) = ids(&span).unwrap();
            assert_eq!(sampled_trace_id(&span).as_deref(), Some(trace_id.as_str()));
            assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_ne!(
                span_id, "00f067aa0ba902b7",
                "a new span, child of the caller's"
            );

            let mut outgoing = http::HeaderMap::new();
            inject_headers(&span, &mut outgoing);
            let sent = outgoing.get(TRACEPARENT).unwrap().to_str().unwrap();
            assert!(
                sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{sent}"
            );
            assert!(sent.contains(&span_id), "{sent}");
            assert_eq!(outgoing.get(BAGGAGE).unwrap(), "tenant=t1");

            // Stored and restored: the same trace, the stored span as parent.
            let stored = context_fields(&span);
            let resumed = tracing::info_span!("resumed");
            assert!(set_parent(&resumed, &stored));
            assert_eq!(ids(&resumed).unwrap().0, trace_id);
        });
    }

    #[test]
    fn without_a_context_nothing_is_written_or_changed() {
        with_otel(|| {
            let span = tracing::info_span!("no parent");
            let garbage: TraceFields = [(TRACEPARENT.to_owned(), "00-zz-yy-01".to_owned())].into();
            assert!(!set_parent(&span, &garbage));
            assert!(!set_parent(&span, &TraceFields::new()));
        });
        // No OpenTelemetry layer: spans have no context, nothing to propagate.
        let span = tracing::info_span!("plain");
        let mut headers = http::HeaderMap::new();
        inject_headers(&span, &mut headers);
        assert!(headers.is_empty());
        assert!(context_fields(&span).is_empty());
        assert!(ids(&span).is_none());
    }
}
