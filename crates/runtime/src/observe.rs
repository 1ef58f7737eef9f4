//! Observation layer: a tracing span per call (method, request id) and the server metrics.
//!
//! A call is counted when it ends, with its final status code: at once for a trailers-only
//! response (how tonic answers an error before any message), otherwise when the response body
//! delivers its trailers (`grpc-status` there), so a stream that fails after some messages is
//! counted with its error. A body dropped before its end (the client went away) counts as
//! `Cancelled`; one that ends without trailers as `Unknown`. Latency and the in-flight gauge
//! cover the whole call, to its last frame.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use futures::future::BoxFuture;
use http::{HeaderName, Request, Response};
use http_body::Frame;
use pin_project_lite::pin_project;
use tracing::Instrument as _;

use crate::{
    metrics::{CallLabels, MethodLabels, Metrics},
    request_id::RequestId,
};

/// Wraps each call in a span and records its outcome.
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    metrics: Metrics,
}

impl ObserveLayer {
    /// Records into `metrics`.
    #[must_use]
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Metrics,
}

// === impl Observe ===

/// Splits `/pkg.Service/Method` into its two parts.
fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The name of the status code in `headers`, if they carry one.
fn code_name(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(GRPC_STATUS)?;
    let code = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Unknown, tonic::Code::from_i32);
    Some(format!("{code:?}"))
}

/// A call not counted yet: counted once, with its final code, by [`Pending::finish`], or as
/// `Cancelled` if it is dropped first (the client went away before the end).
struct Pending {
    metrics: Metrics,
    service: String,
    method: String,
    started: Instant,
    counted: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.counted {
            self.count("Cancelled".to_owned());
        }
    }
}

impl Pending {
    fn finish(mut self, code: String) {
        self.count(code);
    }

    fn count(&mut self, code: String) {
        self.counted = true;
        let elapsed = self.started.elapsed();
        self.metrics.in_flight.dec();
        tracing::debug!(grpc.code = %code, elapsed_ms = elapsed.as_secs_f64() * 1e3, "call finished");
        self.metrics
            .latency
            .get_or_create(&MethodLabels {
                grpc_service: self.service.clone(),
                grpc_method: self.method.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.metrics
            .handled
            .get_or_create(&CallLabels {
                grpc_service: self.service.clone(),
                grpc_method: self.method.clone(),
                grpc_code: code,
            })
            .inc();
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
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| code_name(trailers).unwrap_or_else(|| "Unknown".to_owned())),
            // The body failed, or ended without trailers.
            Some(Err(_)) | None => Some("Unknown".to_owned()),
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

impl<S, B, ResBody> tower_service::Service<Request<B>> for Observe<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .unwrap_or_default();
        let span = tracing::info_span!(
            "grpc",
            rpc.service = %service,
            rpc.method = %method,
            request_id = %request_id,
        );
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        self.metrics.in_flight.inc();
        let pending = Pending {
            metrics: self.metrics.clone(),
            service,
            method,
            started: Instant::now(),
            counted: false,
        };
        Box::pin(
            async move {
                match future.await {
                    Ok(response) => {
                        let (parts, body) = response.into_parts();
                        // Trailers-only (an error before any message): the call is over.
                        let pending = match code_name(&parts.headers) {
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
                        pending.finish("Unknown".to_owned());
                        Err(err)
                    }
                }
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
        ObserveLayer::new(metrics.clone()).layer(inner)
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
    fn splits_grpc_paths() {
        assert_eq!(
            split_path("/shop.catalog.v1.CatalogService/GetProduct"),
            (
                "shop.catalog.v1.CatalogService".to_owned(),
                "GetProduct".to_owned()
            )
        );
        assert_eq!(split_path("/odd"), ("odd".to_owned(), String::new()));
    }
}
