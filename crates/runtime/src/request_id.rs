//! Correlation id layer: every call carries an `x-request-id`, taken from the caller or made
//! here (UUIDv7), visible to handlers as request metadata and the [`RequestId`] extension, and
//! echoed in the response headers.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};

/// The header carrying the correlation id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The correlation id of the current call, as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Adds a [`RequestId`] to each request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> tower_layer::Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId { inner }
    }
}

/// The service made by [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct SetRequestId<S> {
    inner: S,
}

// === impl SetRequestId ===

/// An id from the caller is kept if it is short printable ASCII; anything else is replaced.
fn usable(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let ok = !text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(text)
}

impl<S, B, ResBody> tower_service::Service<Request<B>> for SetRequestId<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(usable)
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
        let header = HeaderValue::from_str(&id).ok();
        if let Some(header) = &header {
            request
                .headers_mut()
                .insert(REQUEST_ID_HEADER, header.clone());
        }
        request.extensions_mut().insert(RequestId(id));
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            if let Some(header) = header {
                response.headers_mut().insert(REQUEST_ID_HEADER, header);
            }
            Ok(response)
        })
    }
}
