//! Prometheus metrics of the gRPC server, served on the admin port at `/metrics`: calls handled,
//! their latency, calls in flight, the same for calls to dependencies, and the circuit breaker state of every dependency the service
//! calls through [`crate::client::connect`].

use std::sync::{Arc, Mutex, PoisonError};

use shop_resilience::breaker::{BreakerHandle, BreakerState};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter, exemplar::HistogramWithExemplars, family::Family, gauge::Gauge,
        histogram::exponential_buckets,
    },
    registry::Registry,
};

/// Labels of one finished call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Full protobuf service name.
    pub grpc_service: String,
    /// Method name.
    pub grpc_method: String,
    /// gRPC status code name as tonic spells it, e.g. `Ok`, `InvalidArgument`.
    pub grpc_code: String,
}

/// Labels of one method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// Full protobuf service name.
    pub grpc_service: String,
    /// Method name.
    pub grpc_method: String,
}

/// Labels of one finished call to a dependency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientCallLabels {
    /// The dependency's name (e.g. `catalog`).
    pub dependency: String,
    /// Full protobuf service name.
    pub grpc_service: String,
    /// Method name.
    pub grpc_method: String,
    /// gRPC status code name as tonic spells it, e.g. `Ok`, `InvalidArgument`.
    pub grpc_code: String,
}

/// Labels of one method of a dependency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientMethodLabels {
    /// The dependency's name.
    pub dependency: String,
    /// Full protobuf service name.
    pub grpc_service: String,
    /// Method name.
    pub grpc_method: String,
}

/// Labels of a local rejection on the server (`overloaded`, `rate_limited`,
/// `deadline_exceeded`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    /// Why the call was refused before a handler saw it.
    pub reason: String,
}

/// Labels of a local rejection of a call to a dependency (`circuit_open`, `bulkhead_full`,
/// `queue_timeout`, `deadline_exceeded`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientRejectionLabels {
    /// The dependency.
    pub dependency: String,
    /// Why the client stack refused the call itself.
    pub reason: String,
}

/// Labels of one dependency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabels {
    /// The dependency.
    pub dependency: String,
}

/// Labels of one dependency's circuit breaker in one state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    /// The dependency's name (e.g. `catalog`).
    pub dependency: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
}

/// The exemplar of a latency bucket: the trace of a call that landed in it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    /// The call's trace id (32 hex digits), a sampled one.
    pub trace_id: String,
}

/// A latency histogram whose buckets remember the trace of their latest sampled call.
pub type LatencyHistogram = HistogramWithExemplars<TraceExemplar>;
type HistogramFamily = Family<MethodLabels, LatencyHistogram, fn() -> LatencyHistogram>;
type ClientHistogramFamily = Family<ClientMethodLabels, LatencyHistogram, fn() -> LatencyHistogram>;

/// Every breaker state, with its label value.
const BREAKER_STATES: [(BreakerState, &str); 3] = [
    (BreakerState::Closed, "closed"),
    (BreakerState::Open, "open"),
    (BreakerState::HalfOpen, "half_open"),
];

/// The server's metrics and the registry they live in. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub(crate) handled: Family<CallLabels, Counter>,
    pub(crate) latency: HistogramFamily,
    pub(crate) in_flight: Gauge,
    pub(crate) client_handled: Family<ClientCallLabels, Counter>,
    pub(crate) client_latency: ClientHistogramFamily,
    pub(crate) server_rejected: Family<RejectionLabels, Counter>,
    pub(crate) client_rejected: Family<ClientRejectionLabels, Counter>,
    pub(crate) client_retries: Family<DependencyLabels, Counter>,
    breakers: Arc<Mutex<Vec<BreakerHandle>>>,
    breaker_state: Family<BreakerLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> LatencyHistogram {
    // 100 µs .. ~3.3 s
    HistogramWithExemplars::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    /// A registry holding the standard gRPC server metrics.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shop");
        let handled = Family::<CallLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let in_flight = Gauge::default();
        registry.register(
            "grpc_server_handled",
            "gRPC calls completed, by method and status code",
            handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from the arrival of gRPC calls to their last frame, by method",
            latency.clone(),
        );
        registry.register(
            "grpc_server_in_flight",
            "gRPC calls being handled now",
            in_flight.clone(),
        );
        let client_handled = Family::<ClientCallLabels, Counter>::default();
        let client_latency: ClientHistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "grpc_client_handled",
            "gRPC calls to dependencies completed (all attempts of one call count once), by \
             dependency, method and status code",
            client_handled.clone(),
        );
        registry.register(
            "grpc_client_handling_seconds",
            "Time from the start of calls to dependencies to their last frame, retries included",
            client_latency.clone(),
        );
        let server_rejected = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "grpc_server_rejected",
            "Calls refused before a handler saw them: shed, rate limited, deadline passed",
            server_rejected.clone(),
        );
        let client_rejected = Family::<ClientRejectionLabels, Counter>::default();
        registry.register(
            "grpc_client_rejected",
            "Calls to dependencies refused by the client stack itself: breaker open, bulkhead \
             full or its queue timed out, deadline passed",
            client_rejected.clone(),
        );
        let client_retries = Family::<DependencyLabels, Counter>::default();
        registry.register(
            "grpc_client_retries",
            "Extra attempts of calls to dependencies (idempotent methods only)",
            client_retries.clone(),
        );
        let breaker_state = Family::<BreakerLabels, Gauge>::default();
        registry.register(
            "client_breaker_state",
            "Circuit breaker of each dependency: 1 for its current state, 0 for the others",
            breaker_state.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            handled,
            latency,
            in_flight,
            client_handled,
            client_latency,
            server_rejected,
            client_rejected,
            client_retries,
            breakers: Arc::default(),
            breaker_state,
        }
    }

    /// Reports `breaker` as `shop_client_breaker_state{dependency, state}`, read at every
    /// scrape (the breaker itself keeps no reference to the metrics). A later breaker with the
    /// same dependency name replaces the earlier one.
    pub fn track_breaker(&self, breaker: BreakerHandle) {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        breakers.retain(|b| b.name() != breaker.name());
        breakers.push(breaker);
    }

    /// Sets the breaker gauges from the tracked breakers' current states.
    fn refresh_breakers(&self) {
        let breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        for breaker in breakers.iter() {
            let current = breaker.state();
            for (state, label) in BREAKER_STATES {
                self.breaker_state
                    .get_or_create(&BreakerLabels {
                        dependency: breaker.name().to_owned(),
                        state: label.to_owned(),
                    })
                    .set(i64::from(state == current));
            }
        }
    }

    /// Lets a service register metrics of its own.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut registry)
    }

    /// The OpenMetrics text exposition of every registered metric.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        self.refresh_breakers();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        encode(&mut out, &registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
