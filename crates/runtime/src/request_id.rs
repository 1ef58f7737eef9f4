//! Correlation id layer: every call carries an `x-request-id`, taken from the caller or made
//! here (UUIDv7), visible to handlers as request metadata and the [`RequestId`] extension, and
//! echoed in the response headers.
//!
//! tower-http's request-id layers do the work (`SetRequestId` makes the id and the extension,
//! `PropagateRequestId` echoes it); the one thing added here is that a caller's id is kept only
//! if it is short printable ASCII, so a log line or a header can never be stuffed through it.

use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestId, PropagateRequestIdLayer, SetRequestId, SetRequestIdLayer,
};

/// The correlation id of the current call, as a request extension.
pub use tower_http::request_id::RequestId;

/// The header carrying the correlation id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

const HEADER: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// Adds a [`RequestId`] to each request and echoes it in the response.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

/// The service made by [`RequestIdLayer`].
pub type WithRequestId<S> = DropUnusable<SetRequestId<PropagateRequestId<S>, MakeUuidV7>>;

impl<S> tower_layer::Layer<S> for RequestIdLayer {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let propagated = PropagateRequestIdLayer::new(HEADER).layer(inner);
        DropUnusable {
            inner: SetRequestIdLayer::new(HEADER, MakeUuidV7).layer(propagated),
        }
    }
}

/// Makes a UUIDv7 id (time-ordered, so ids sort by when the call arrived).
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeUuidV7;

impl MakeRequestId for MakeUuidV7 {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        HeaderValue::try_from(uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// Removes a caller's `x-request-id` that is not usable, so a fresh one is made.
#[derive(Debug, Clone)]
pub struct DropUnusable<S> {
    inner: S,
}

// === impl DropUnusable ===

/// An id from the caller is kept if it is short printable ASCII; anything else is replaced.
fn usable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
}

impl<S, B> tower_service::Service<Request<B>> for DropUnusable<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if request.headers().get(&HEADER).is_some_and(|id| !usable(id)) {
            request.headers_mut().remove(&HEADER);
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::convert::Infallible;

    use tower::{Layer as _, ServiceExt as _};

    use super::*;

    /// The id the handler saw (extension and header) and the one echoed back.
    async fn ids(sent: Option<&str>) -> (String, String, String) {
        let handler = tower::service_fn(|req: Request<()>| async move {
            let ext = req.extensions().get::<RequestId>().unwrap().clone();
            let header = req.headers().get(&HEADER).unwrap().clone();
            let seen = format!(
                "{}|{}",
                ext.header_value().to_str().unwrap(),
                header.to_str().unwrap()
            );
            Ok::<_, Infallible>(http::Response::new(seen))
        });
        let mut request = Request::new(());
        if let Some(id) = sent {
            request
                .headers_mut()
                .insert(&HEADER, HeaderValue::from_str(id).unwrap());
        }
        let response = RequestIdLayer
            .layer(handler)
            .oneshot(request)
            .await
            .unwrap();
        let echoed = response.headers().get(&HEADER).unwrap().to_str().unwrap();
        let echoed = echoed.to_owned();
        let (ext, header) = response.body().split_once('|').unwrap();
        (ext.to_owned(), header.to_owned(), echoed)
    }

    #[tokio::test]
    async fn keeps_a_usable_id_and_replaces_others() {
        let (ext, header, echoed) = ids(Some("req-123")).await;
        assert_eq!(
            (ext.as_str(), header.as_str(), echoed.as_str()),
            ("req-123", "req-123", "req-123")
        );

        for bad in [None, Some("has space"), Some(&*"x".repeat(129))] {
            let (ext, header, echoed) = ids(bad).await;
            assert!(uuid::Uuid::parse_str(&ext).is_ok(), "{bad:?} -> {ext}");
            assert_eq!(ext, header);
            assert_eq!(ext, echoed);
        }
    }
}
