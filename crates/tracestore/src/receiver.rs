//! The OTLP/gRPC trace service and the query endpoint, on one port.
//!
//! `GET /trace?id=TRACE_ID`, `GET /trace?attribute=KEY&value=VALUE` (the latest trace with
//! such a span) and `GET /trace?root=NAME` (the latest trace whose root is named so) answer
//! the trace's spans as a JSON array, by start time; an empty array when nothing matches.

use std::future::Future;

use axum::extract::{Query, State};
use axum::routing::get;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use serde::{Deserialize, Serialize};

use crate::store::{SpanStore, StoredSpan};

/// What a query asks for (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceQuery {
    /// A trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// An attribute a span of the trace carries, with [`Self::value`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// The attribute's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The name of the trace's root span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

impl TraceQuery {
    /// The spans of the trace this query names, from `store`.
    pub fn answer(&self, store: &SpanStore) -> Vec<StoredSpan> {
        let trace_id = match (&self.id, &self.attribute, &self.value, &self.root) {
            (Some(id), ..) => Some(id.clone()),
            (None, Some(key), Some(value), _) => store.find(key, value).into_iter().next(),
            (None, _, _, Some(root)) => store.last_with_root(root),
            _ => None,
        };
        trace_id.map(|id| store.trace(&id)).unwrap_or_default()
    }

    /// The query string for `GET /trace`.
    pub fn to_query_string(&self) -> String {
        let pairs = [
            ("id", &self.id),
            ("attribute", &self.attribute),
            ("value", &self.value),
            ("root", &self.root),
        ];
        pairs
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Percent-encodes what is not unreserved in a URL query.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The listener failed.
    #[error("trace receiver: {0}")]
    Io(#[from] std::io::Error),
}

struct Receiver {
    store: SpanStore,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.store.add(request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn query(
    State(store): State<SpanStore>,
    Query(query): Query<TraceQuery>,
) -> axum::Json<Vec<StoredSpan>> {
    axum::Json(query.answer(&store))
}

/// Serves OTLP/gRPC exports into `store` and the query endpoint on `listener` until
/// `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: SpanStore,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverError> {
    let otlp = tonic::service::Routes::new(TraceServiceServer::new(Receiver {
        store: store.clone(),
    }))
    .into_axum_router();
    let app = otlp.merge(
        axum::Router::new()
            .route("/trace", get(query))
            .with_state(store),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
