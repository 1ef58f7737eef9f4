//! meshctl's local tracing backend: what `meshctl up` points every service's
//! `OTEL_EXPORTER_OTLP_ENDPOINT` at, and what `meshctl trace` reads.
//!
//! - [`store`]: [`SpanStore`], the last [`StoreLimits::max_traces`] traces in memory (oldest
//!   dropped first), searchable by an attribute value (an order id is `saga.id` on every step)
//!   or as the latest trace with a given root.
//! - [`receiver`]: the OTLP/gRPC `TraceService` on one port, beside `GET /traces?...` (JSON)
//!   on the same port for the CLI.
//! - [`waterfall`]: a trace drawn for the terminal: the span tree with service, start offset,
//!   duration, a bar on the trace's time line and errors.
//!
//! Written here rather than run as Jaeger because `meshctl up` must work on a machine with
//! nothing but cargo: no container, no download. A real collector is the Kubernetes story
//! (`k8s/components/jaeger`).

pub mod receiver;
pub mod store;
pub mod waterfall;

pub use receiver::{ReceiverError, TraceQuery, serve};
pub use store::{SpanStore, StoreLimits, StoredSpan};
pub use waterfall::render;
