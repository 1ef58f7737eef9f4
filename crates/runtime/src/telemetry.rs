//! Tracing setup: the `RUST_LOG` filter, text or JSON log lines, and OpenTelemetry traces over
//! OTLP/gRPC.
//!
//! # Traces
//!
//! Export is configured by the standard OpenTelemetry variables and is **off unless an endpoint
//! is set**: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), e.g.
//! `http://otel-collector:4317`. The SDK itself reads the rest: `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` (the service's own name is the default `service.name`),
//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`),
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*` for the batch processor. `OTEL_SDK_DISABLED=true`
//! or `OTEL_TRACES_EXPORTER=none` turn it off. Every `tracing` span at the filter's level
//! becomes an OpenTelemetry span; the kit's spans carry the semantic conventions' names and
//! attributes (`otel.kind`, `rpc.*`, `messaging.*`), and `shop_trace` carries their context
//! across calls, events and stored rows.
//!
//! The SDK's batch processor exports from a thread of its own, outside tokio, but the tonic
//! exporter needs a tokio reactor: [`OnRuntime`] hands every export to the service's runtime
//! and waits for it there (the processor's thread is free to block).
//!
//! # Logs
//!
//! `LOG_FORMAT=json` writes one object per line with `timestamp`, `level`, `target`,
//! `service`, `message` and the event's fields, plus — within a request or an event's
//! handling — `trace_id` and `span_id` of the current span (when traces are on) and the fields
//! of the spans around it (`request_id`, `rpc.method`, `messaging.message.id`, …), the
//! innermost winning. tracing-subscriber's own JSON format nests span fields and cannot know
//! OpenTelemetry ids, hence [`JsonLines`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::{LogFormat, TelemetryConfig};

/// Keeps telemetry alive; dropping it flushes the spans not exported yet and stops the
/// exporter. Hold it for the life of `main`.
#[must_use = "telemetry is flushed when the guard drops"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("traces", &self.provider.is_some())
            .finish()
    }
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every finished span now (tests, before they read a collector).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(%error, "spans not flushed");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            // The subscriber may be gone; stderr is what is left.
            eprintln!("telemetry: spans not flushed at shutdown: {error}");
        }
    }
}

/// Whether the environment asks for trace export: an OTLP endpoint is set and the SDK is not
/// disabled.
pub fn traces_configured(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// What went wrong setting up the exporter (tracing then stays off; logs still work).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Not called within a tokio runtime.
    #[error("trace export needs a tokio runtime")]
    NoRuntime,
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// A tracer provider exporting over OTLP/gRPC as the environment says, with `service` as the
/// default `service.name`. Must be called within a tokio runtime.
pub fn tracer_provider(service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .ok()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.trim().is_empty());
    tracer_provider_to(service, endpoint.as_deref())
}

/// [`tracer_provider`] exporting to `endpoint` (`http://host:4317`) rather than the one the
/// environment names (tests with their own receiver).
pub fn tracer_provider_to(
    service: &str,
    endpoint: Option<&str>,
) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter.build()?;
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named_by_env {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(OnRuntime::new(exporter, runtime))
        .with_resource(resource.build())
        .build())
}

/// Installs the global subscriber for `service`: the filter, the log lines, and trace export
/// if configured (see the module docs). A second call (tests starting several services in one
/// process) keeps the first subscriber and is not an error.
pub fn init(service: &str, config: &TelemetryConfig) -> TelemetryGuard {
    let provider = if traces_configured(|name| std::env::var(name).ok()) {
        match tracer_provider(service) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("telemetry: traces off: {error}");
                None
            }
        }
    } else {
        None
    };
    let installed = install(service, config.log_format, provider.as_ref());
    TelemetryGuard {
        provider: installed.then_some(provider).flatten(),
    }
}

/// Installs the global subscriber with `provider`'s tracer (if any); whether it was installed
/// (false if one already was).
pub fn install(service: &str, format: LogFormat, provider: Option<&SdkTracerProvider>) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = provider.map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("shop")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match format {
        LogFormat::Json => registry
            .with(SpanFieldsLayer)
            .with(fmt::layer().event_format(JsonLines::new(service)))
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_target(true)).try_init(),
    };
    match installed {
        Ok(()) => {
            let weak = tracing::dispatcher::get_default(tracing::Dispatch::downgrade);
            let _ = DISPATCH.set(weak);
            true
        }
        Err(_) => {
            tracing::debug!("a tracing subscriber was already installed; keeping it");
            false
        }
    }
}

/// The global dispatcher, to read spans' OpenTelemetry contexts while formatting.
static DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

// === OnRuntime ===

/// A span exporter whose exports run on a tokio runtime, whatever thread asks for them.
#[derive(Debug)]
pub struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: tokio::runtime::Handle,
}

impl<E> OnRuntime<E> {
    /// Runs `inner`'s exports on `runtime`.
    pub fn new(inner: E, runtime: tokio::runtime::Handle) -> Self {
        Self {
            inner: Arc::new(inner),
            runtime,
        }
    }
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let inner = Arc::clone(&self.inner);
        let export = self.runtime.spawn(async move { inner.export(batch).await });
        async move {
            export
                .await
                .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        // Called once while the provider is built, before any export holds a clone.
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.set_resource(resource),
            None => eprintln!("telemetry: resource not set on the exporter: it is in use"),
        }
    }
}

// === JSON lines ===

/// The fields of one span, as JSON values, kept in the span's extensions for [`JsonLines`].
#[derive(Debug, Default)]
struct SpanFields(serde_json::Map<String, serde_json::Value>);

/// Records every span's fields into [`SpanFields`].
struct SpanFieldsLayer;

impl<S> Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut fields = SpanFields::default();
            attrs.record(&mut JsonVisitor(&mut fields.0));
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(fields) = extensions.get_mut::<SpanFields>() {
                values.record(&mut JsonVisitor(&mut fields.0));
            }
        }
    }
}

/// Collects fields as JSON values; `message` included.
struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

/// One JSON object per event (see the module docs).
struct JsonLines {
    service: String,
}

impl JsonLines {
    fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
        }
    }
}

/// The trace id and span id of span `id`, if it has an OpenTelemetry context.
fn otel_ids(id: &Id) -> Option<(String, String)> {
    let dispatch = DISPATCH.get()?.upgrade()?;
    let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| {
        (
            context.trace_id().to_string(),
            context.span_id().to_string(),
        )
    })
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        line.insert("timestamp".into(), now.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("service".into(), self.service.as_str().into());
        // Span fields, outermost first so the innermost win.
        let mut span_fields = BTreeMap::new();
        let mut innermost = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.0 {
                        span_fields.insert(k.clone(), v.clone());
                    }
                }
                innermost = Some((span.id(), span.name()));
            }
        }
        if let Some((id, name)) = innermost {
            line.insert("span".into(), name.into());
            if let Some((trace_id, span_id)) = otel_ids(&id) {
                line.insert("trace_id".into(), trace_id.into());
                line.insert("span_id".into(), span_id.into());
            }
        }
        for (k, v) in span_fields {
            // Tracing-opentelemetry's own instructions are not log fields.
            if !k.starts_with("otel.") {
                line.entry(k).or_insert(v);
            }
        }
        let mut fields = serde_json::Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        for (k, v) in fields {
            line.insert(k, v);
        }
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set_and_the_sdk_is_not_disabled() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(!traces_configured(env(&[])));
        assert!(!traces_configured(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            " "
        )])));
        assert!(traces_configured(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        assert!(traces_configured(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4317"
        )])));
        assert!(!traces_configured(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])));
        assert!(!traces_configured(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])));
    }
}
