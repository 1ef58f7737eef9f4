//! Observation layer: a tracing span per call (method, request id) and the server metrics.
//!
//! The status code is read from the response headers. Errors a handler returns are sent by
//! tonic as trailers-only responses, so they carry `grpc-status` in the headers; a response
//! without it started successfully and is counted as `OK`. A stream that fails after its first
//! message is therefore counted as `OK` here and shows in the logs instead.

use std::{
    task::{Context, Poll},
    time::Instant,
};

use futures::future::BoxFuture;
use http::{Request, Response};
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

fn code_name(headers: &http::HeaderMap) -> String {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
    format!("{code:?}")
}

impl<S, B, ResBody> tower_service::Service<Request<B>> for Observe<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = Response<ResBody>;
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
        let metrics = self.metrics.clone();
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                metrics.in_flight.inc();
                let started = Instant::now();
                let result = future.await;
                metrics.in_flight.dec();
                let elapsed = started.elapsed();
                let code = match &result {
                    Ok(response) => code_name(response.headers()),
                    Err(err) => {
                        tracing::warn!(error = %err, "call failed in transport");
                        "Unknown".to_owned()
                    }
                };
                tracing::debug!(grpc.code = %code, elapsed_ms = elapsed.as_secs_f64() * 1e3, "call finished");
                metrics
                    .latency
                    .get_or_create(&MethodLabels {
                        grpc_service: service.clone(),
                        grpc_method: method.clone(),
                    })
                    .observe(elapsed.as_secs_f64());
                metrics
                    .handled
                    .get_or_create(&CallLabels {
                        grpc_service: service,
                        grpc_method: method,
                        grpc_code: code,
                    })
                    .inc();
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::split_path;

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
