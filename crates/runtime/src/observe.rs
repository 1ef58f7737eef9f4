//! Observation layers: a tracing span per call, server side ([`ObserveLayer`]: the caller's
//! trace context continues in it) and client side ([`ClientObserveLayer`]: its context goes out
//! with the call), and the RPC metrics of both.
//!
//! A call is counted when it ends, with its final status code: at once for a trailers-only
//! response (how tonic answers an error before any message), otherwise when the response body
//! delivers its trailers (`grpc-status` there), so a stream that fails after some messages is
//! counted with its error. A body dropped before its end (the client went away) counts as
//! `Cancelled`; one that ends without trailers as `Unknown`. Latency and the in-flight gauge
//! cover the whole call, to its last frame.
//!
//! Labels name only methods the server serves ([`KnownMethods`], read from the descriptor sets
//! at start): any other path, however many a caller makes up, lands in the one
//! `grpc_service="unknown", grpc_method="unknown"` series, so the number of series stays bounded
//! by the contracts and not by what callers send (rate-limited and shed calls included).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::Frame;
use pin_project_lite::pin_project;
use tracing::Instrument as _;

use crate::{
    metrics::{
        CallLabels, ClientCallLabels, ClientMethodLabels, ClientRejectionLabels, DependencyLabels,
        MethodLabels, Metrics, RejectionLabels, TraceExemplar,
    },
    request_id::RequestId,
};

/// The label value of every path that is not a served method.
pub const UNKNOWN: &str = "unknown";

/// The span name of every path that is not a served method.
const UNKNOWN_SPAN: &str = "unknown/unknown";

/// The gRPC methods a server serves, with their metric labels, searched by path.
#[derive(Debug, Clone, Default)]
pub struct KnownMethods {
    /// `/pkg.Service/Method` and its labels, sorted by path.
    paths: Arc<[(Box<str>, MethodLabels)]>,
}

impl KnownMethods {
    /// Every method of the services named in `services` found in `descriptor_sets` (encoded
    /// `FileDescriptorSet`s).
    pub fn new(
        descriptor_sets: &[&[u8]],
        services: &[&str],
    ) -> Result<Self, prost_reflect::DescriptorError> {
        let mut paths = Vec::new();
        for set in descriptor_sets {
            let pool = prost_reflect::DescriptorPool::decode(*set)?;
            for service in pool
                .services()
                .filter(|s| services.contains(&s.full_name()))
            {
                for method in service.methods() {
                    let path = format!("/{}/{}", service.full_name(), method.name());
                    let labels = MethodLabels {
                        grpc_service: service.full_name().to_owned(),
                        grpc_method: method.name().to_owned(),
                    };
                    paths.push((path.into_boxed_str(), labels));
                }
            }
        }
        paths.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        paths.dedup_by(|a, b| a.0 == b.0);
        Ok(Self {
            paths: paths.into(),
        })
    }

    /// Every method of every service in `descriptor_sets` (a client may call any of them).
    pub fn all(descriptor_sets: &[&[u8]]) -> Result<Self, prost_reflect::DescriptorError> {
        let mut names = Vec::new();
        for set in descriptor_sets {
            let pool = prost_reflect::DescriptorPool::decode(*set)?;
            names.extend(pool.services().map(|s| s.full_name().to_owned()));
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Self::new(descriptor_sets, &names)
    }

    /// The labels of `path` (its service and method if served, else [`UNKNOWN`] for both) and
    /// its span name (`pkg.Service/Method`, the served path without
    /// its slash, so no name is built per call; `unknown/unknown` for any other path).
    fn lookup(&self, path: &str) -> (MethodLabels, &str) {
        match self.paths.binary_search_by(|(p, _)| (**p).cmp(path)) {
            Ok(found) => {
                let (path, labels) = &self.paths[found];
                (labels.clone(), path.trim_start_matches('/'))
            }
            Err(_) => (
                MethodLabels {
                    grpc_service: UNKNOWN.to_owned(),
                    grpc_method: UNKNOWN.to_owned(),
                },
                UNKNOWN_SPAN,
            ),
        }
    }
}

/// Wraps each call in a span and records its outcome.
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    metrics: Metrics,
    methods: KnownMethods,
}

impl ObserveLayer {
    /// Records into `metrics`, labelling calls to `methods` by method and the rest as unknown.
    #[must_use]
    pub fn new(metrics: Metrics, methods: KnownMethods) -> Self {
        Self { metrics, methods }
    }
}

impl<S> tower_layer::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: self.metrics.clone(),
            methods: self.methods.clone(),
        }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Metrics,
    methods: KnownMethods,
}

// === impl Observe ===

/// Which end of the call is observed.
#[derive(Debug, Clone)]
enum Side {
    Server,
    /// A call to the named dependency.
    Client(Arc<str>),
}

/// Codes that make a server span an error under the OpenTelemetry RPC conventions (the rest
/// are the caller's problem); on the client every code but `Ok` is one.
fn server_fault(code: tonic::Code) -> bool {
    use tonic::Code::{DataLoss, DeadlineExceeded, Internal, Unavailable, Unimplemented, Unknown};
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

/// A call not counted yet: counted once, with its final code, by [`Pending::finish`], or as
/// `Cancelled` if it is dropped first (the client went away before the end).
struct Pending {
    metrics: Metrics,
    labels: MethodLabels,
    started: Instant,
    counted: bool,
    span: tracing::Span,
    side: Side,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.counted {
            self.count(tonic::Code::Cancelled);
        }
    }
}

/// The label of a local rejection.
fn rejection_reason(rejection: shop_resilience::Rejection) -> &'static str {
    use shop_resilience::Rejection;
    match rejection {
        Rejection::CircuitOpen => "circuit_open",
        Rejection::BulkheadFull => "bulkhead_full",
        Rejection::QueueTimeout => "queue_timeout",
        Rejection::DeadlineExceeded => "deadline_exceeded",
        Rejection::Overloaded => "overloaded",
        Rejection::RateLimited { .. } => "rate_limited",
    }
}

impl Pending {
    fn finish(mut self, code: tonic::Code) {
        self.count(code);
    }

    /// Counts what the resilience layers say about the answer: a local rejection (shed, rate
    /// limited, breaker open, bulkhead full, deadline) and, on a client, the retries it took.
    fn noticed<B>(&self, response: &Response<B>) {
        let rejection = shop_resilience::Rejection::of(response).map(rejection_reason);
        match &self.side {
            Side::Server => {
                if let Some(reason) = rejection {
                    self.metrics
                        .server_rejected
                        .get_or_create(&RejectionLabels {
                            reason: reason.to_owned(),
                        })
                        .inc();
                }
            }
            Side::Client(dependency) => {
                if let Some(reason) = rejection {
                    self.metrics
                        .client_rejected
                        .get_or_create(&ClientRejectionLabels {
                            dependency: dependency.to_string(),
                            reason: reason.to_owned(),
                        })
                        .inc();
                }
                if let Some(shop_resilience::retry::Attempts(attempts)) =
                    response.extensions().get()
                    && *attempts > 1
                {
                    self.metrics
                        .client_retries
                        .get_or_create(&DependencyLabels {
                            dependency: dependency.to_string(),
                        })
                        .inc_by(u64::from(*attempts - 1));
                }
            }
        }
    }

    fn count(&mut self, code: tonic::Code) {
        self.counted = true;
        let elapsed = self.started.elapsed();
        self.span.record("rpc.grpc.status_code", code as i32);
        let error = match self.side {
            Side::Server => server_fault(code),
            Side::Client(_) => code != tonic::Code::Ok,
        };
        if error {
            self.span.record("otel.status_code", "ERROR");
        }
        let code = format!("{code:?}");
        // An exemplar only for a sampled trace: one that a trace backend has.
        let exemplar =
            shop_trace::sampled_trace_id(&self.span).map(|trace_id| TraceExemplar { trace_id });
        let _entered = self.span.enter();
        tracing::debug!(grpc.code = %code, elapsed_ms = elapsed.as_secs_f64() * 1e3, "call finished");
        match &self.side {
            Side::Server => {
                self.metrics.in_flight.dec();
                self.metrics.latency.get_or_create(&self.labels).observe(
                    elapsed.as_secs_f64(),
                    exemplar,
                    None,
                );
                self.metrics
                    .handled
                    .get_or_create(&CallLabels {
                        grpc_service: self.labels.grpc_service.clone(),
                        grpc_method: self.labels.grpc_method.clone(),
                        grpc_code: code,
                    })
                    .inc();
            }
            Side::Client(dependency) => {
                self.metrics
                    .client_latency
                    .get_or_create(&ClientMethodLabels {
                        dependency: dependency.to_string(),
                        grpc_service: self.labels.grpc_service.clone(),
                        grpc_method: self.labels.grpc_method.clone(),
                    })
                    .observe(elapsed.as_secs_f64(), exemplar, None);
                self.metrics
                    .client_handled
                    .get_or_create(&ClientCallLabels {
                        dependency: dependency.to_string(),
                        grpc_service: self.labels.grpc_service.clone(),
                        grpc_method: self.labels.grpc_method.clone(),
                        grpc_code: code,
                    })
                    .inc();
            }
        }
    }
}

pin_project! {
    /// A response body that counts its call when the stream ends (see the module docs).
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        // Dropped uncounted with the body if the stream never ended: `Cancelled`.
        pending: Option<Pending>,
    }
}

impl<B: http_body::Body> http_body::Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = std::task::ready!(this.inner.poll_frame(cx));
        let code = match &polled {
            Some(Ok(frame)) => frame.trailers_ref().map(|trailers| {
                shop_resilience::classify::status_code(trailers).unwrap_or(tonic::Code::Unknown)
            }),
            // The body failed, or ended without trailers.
            Some(Err(_)) | None => Some(tonic::Code::Unknown),
        };
        if let Some(code) = code
            && let Some(pending) = this.pending.take()
        {
            pending.finish(code);
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A span for a call to `labels`, named and attributed after the OpenTelemetry RPC
/// conventions (`{service}/{method}`, `rpc.system=grpc`).
fn rpc_span(labels: &MethodLabels, name: &str, side: &Side, request_id: &str) -> tracing::Span {
    match side {
        Side::Server => tracing::info_span!(
            "grpc",
            otel.name = %name,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %labels.grpc_service,
            rpc.method = %labels.grpc_method,
            rpc.grpc.status_code = tracing::field::Empty,
            request_id = %request_id,
        ),
        Side::Client(dependency) => tracing::info_span!(
            "grpc client",
            otel.name = %name,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %labels.grpc_service,
            rpc.method = %labels.grpc_method,
            rpc.grpc.status_code = tracing::field::Empty,
            peer.service = %dependency,
        ),
    }
}

/// Awaits `future` (the inner service's answer) and wraps its body so the call is counted when
/// it ends.
async fn observed<F, ResBody, E>(
    future: F,
    pending: Pending,
) -> Result<Response<ObservedBody<ResBody>>, E>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: std::fmt::Display,
{
    match future.await {
        Ok(response) => {
            pending.noticed(&response);
            let (parts, body) = response.into_parts();
            // Trailers-only (an error before any message): the call is over.
            let pending = match shop_resilience::classify::status_code(&parts.headers) {
                Some(code) => {
                    pending.finish(code);
                    None
                }
                None => Some(pending),
            };
            let body = ObservedBody {
                inner: body,
                pending,
            };
            Ok(Response::from_parts(parts, body))
        }
        Err(err) => {
            tracing::warn!(error = %err, "call failed in transport");
            pending.finish(tonic::Code::Unknown);
            Err(err)
        }
    }
}

impl<S, B, ResBody> tower_service::Service<Request<B>> for Observe<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + 'static,
    ResBody: 'static,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (labels, name) = self.methods.lookup(request.uri().path());
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .and_then(|id| id.header_value().to_str().ok())
            .unwrap_or_default();
        let span = rpc_span(&labels, name, &Side::Server, request_id);
        // The caller's trace continues here (W3C traceparent in the metadata).
        shop_trace::set_parent(&span, request.headers());
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        self.metrics.in_flight.inc();
        let pending = Pending {
            metrics: self.metrics.clone(),
            labels,
            started: Instant::now(),
            counted: false,
            span: span.clone(),
            side: Side::Server,
        };
        Box::pin(observed(future, pending).instrument(span))
    }
}

/// The client end: a span per call to a dependency (kind client, child of the caller's current
/// span) whose context goes out in the call's metadata, and the client metrics
/// (`shop_grpc_client_handled_total`, `shop_grpc_client_handling_seconds`). Outermost on the
/// dependency's channel, so one span and one count cover every retry of the call.
#[derive(Debug, Clone)]
pub struct ClientObserveLayer {
    metrics: Metrics,
    methods: KnownMethods,
    dependency: Arc<str>,
}

impl ClientObserveLayer {
    /// Observes calls to `dependency`, labelled by `methods`.
    #[must_use]
    pub fn new(metrics: Metrics, methods: KnownMethods, dependency: &str) -> Self {
        Self {
            metrics,
            methods,
            dependency: dependency.into(),
        }
    }
}

impl<S> tower_layer::Layer<S> for ClientObserveLayer {
    type Service = ClientObserve<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientObserve {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`ClientObserveLayer`].
#[derive(Debug, Clone)]
pub struct ClientObserve<S> {
    inner: S,
    layer: ClientObserveLayer,
}

impl<S, ResBody> tower_service::Service<Request<tonic::body::Body>> for ClientObserve<S>
where
    S: tower_service::Service<Request<tonic::body::Body>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
        let (labels, name) = self.layer.methods.lookup(request.uri().path());
        let side = Side::Client(self.layer.dependency.clone());
        let span = rpc_span(&labels, name, &side, "");
        shop_trace::inject_headers(&span, request.headers_mut());
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let pending = Pending {
            metrics: self.layer.metrics.clone(),
            labels,
            started: Instant::now(),
            counted: false,
            span: span.clone(),
            side,
        };
        Box::pin(
            async move {
                let response = observed(future, pending).await?;
                Ok(response.map(tonic::body::Body::new))
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, StreamBody};
    use tower::{Layer as _, ServiceExt as _};

    use super::*;

    const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

    /// A descriptor set with one service, `shop.test.v1.TestService`, and the methods the tests
    /// call.
    fn test_methods() -> KnownMethods {
        use prost::Message as _;
        use prost_types::{
            FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
        };
        let method = |name: &str| MethodDescriptorProto {
            name: Some(name.to_owned()),
            input_type: Some(".google.protobuf.Empty".to_owned()),
            output_type: Some(".google.protobuf.Empty".to_owned()),
            ..Default::default()
        };
        let empty = prost_types::DescriptorProto {
            name: Some("Empty".to_owned()),
            ..Default::default()
        };
        let set = FileDescriptorSet {
            file: vec![
                FileDescriptorProto {
                    name: Some("google/protobuf/empty.proto".to_owned()),
                    package: Some("google.protobuf".to_owned()),
                    message_type: vec![empty],
                    ..Default::default()
                },
                FileDescriptorProto {
                    name: Some("test.proto".to_owned()),
                    package: Some("shop.test.v1".to_owned()),
                    dependency: vec!["google/protobuf/empty.proto".to_owned()],
                    service: vec![ServiceDescriptorProto {
                        name: Some("TestService".to_owned()),
                        method: ["Missing", "Watch", "Get", "Abandoned"]
                            .into_iter()
                            .map(method)
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        };
        let bytes = set.encode_to_vec();
        KnownMethods::new(&[&bytes], &["shop.test.v1.TestService"]).unwrap()
    }

    type Frames =
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    /// A server answering with `frames` after the headers `status` (if any).
    fn serve(
        metrics: &Metrics,
        status: Option<&'static str>,
        frames: Vec<Frame<Bytes>>,
    ) -> impl tower_service::Service<
        Request<()>,
        Response = Response<ObservedBody<Frames>>,
        Error = Infallible,
    > {
        let mut frames = Some(frames);
        let inner = tower::service_fn(move |_req: Request<()>| {
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = frames
                .take()
                .unwrap_or_default()
                .into_iter()
                .map(Ok)
                .collect();
            let mut response = Response::new(StreamBody::new(futures::stream::iter(frames)));
            if let Some(code) = status {
                response
                    .headers_mut()
                    .insert(GRPC_STATUS, code.parse().unwrap());
            }
            async move { Ok::<_, Infallible>(response) }
        });
        ObserveLayer::new(metrics.clone(), test_methods()).layer(inner)
    }

    fn request(method: &str) -> Request<()> {
        Request::builder()
            .uri(format!("/shop.test.v1.TestService/{method}"))
            .body(())
            .unwrap()
    }

    fn trailers(code: &str) -> Frame<Bytes> {
        let mut map = http::HeaderMap::new();
        map.insert(GRPC_STATUS, code.parse().unwrap());
        Frame::trailers(map)
    }

    fn counted(metrics: &Metrics, method: &str, code: &str) -> bool {
        let text = metrics.render().unwrap();
        text.lines().any(|line| {
            line.starts_with("shop_grpc_server_handled_total{")
                && line.contains(&format!("grpc_method=\"{method}\""))
                && line.contains(&format!("grpc_code=\"{code}\""))
                && line.ends_with(" 1")
        })
    }

    #[tokio::test]
    async fn calls_are_counted_with_their_final_status() {
        let metrics = Metrics::new();

        // Trailers-only error: counted at the headers.
        let service = serve(&metrics, Some("5"), vec![]);
        let response = service.oneshot(request("Missing")).await.unwrap();
        assert!(
            counted(&metrics, "Missing", "NotFound"),
            "{}",
            metrics.render().unwrap()
        );
        drop(response);

        // A stream that fails after a message: counted with the trailers' code, not OK.
        let service = serve(
            &metrics,
            None,
            vec![Frame::data(Bytes::from_static(b"m")), trailers("13")],
        );
        let response = service.oneshot(request("Watch")).await.unwrap();
        assert!(
            !counted(&metrics, "Watch", "Internal"),
            "not before the stream ends"
        );
        response.into_body().collect().await.unwrap();
        assert!(
            counted(&metrics, "Watch", "Internal"),
            "{}",
            metrics.render().unwrap()
        );

        // A successful unary call.
        let service = serve(
            &metrics,
            None,
            vec![Frame::data(Bytes::from_static(b"m")), trailers("0")],
        );
        let response = service.oneshot(request("Get")).await.unwrap();
        response.into_body().collect().await.unwrap();
        assert!(counted(&metrics, "Get", "Ok"));

        // The client goes away mid-stream.
        let service = serve(
            &metrics,
            None,
            vec![Frame::data(Bytes::from_static(b"m")), trailers("0")],
        );
        let response = service.oneshot(request("Abandoned")).await.unwrap();
        drop(response);
        assert!(counted(&metrics, "Abandoned", "Cancelled"));
        assert!(
            metrics
                .render()
                .unwrap()
                .contains("shop_grpc_server_in_flight 0")
        );
    }

    #[test]
    fn labels_only_known_methods() {
        let methods = test_methods();
        let (get, name) = methods.lookup("/shop.test.v1.TestService/Get");
        assert_eq!(name, "shop.test.v1.TestService/Get");
        assert_eq!(get.grpc_service, "shop.test.v1.TestService");
        assert_eq!(get.grpc_method, "Get");
        for path in ["/shop.test.v1.TestService/Nope", "/odd", "", "/x/y/z"] {
            let (labels, _) = methods.lookup(path);
            assert_eq!(
                (labels.grpc_service.as_str(), labels.grpc_method.as_str()),
                (UNKNOWN, UNKNOWN)
            );
        }
    }
}
