//! The receiver on a real socket: an OTLP/gRPC export goes in through the generated client,
//! and `GET /trace` on the same port answers it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use shop_tracestore::{SpanStore, StoredSpan, TraceQuery};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[tokio::test]
async fn an_exported_span_can_be_queried_on_the_same_port() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(shop_tracestore::serve(
        listener,
        SpanStore::default(),
        async {
            let _ = stopped.await;
        },
    ));

    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let attribute = KeyValue {
        key: "saga.id".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("order 1/é".into())),
        }),
        ..Default::default()
    };
    client
        .export(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![7; 16],
                        span_id: vec![1; 8],
                        name: "saga order reserve".into(),
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 2,
                        attributes: vec![attribute],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .unwrap();

    let query = TraceQuery {
        attribute: Some("saga.id".into()),
        value: Some("order 1/é".into()),
        ..TraceQuery::default()
    };
    let body = get(addr, &format!("/trace?{}", query.to_query_string())).await;
    let spans: Vec<StoredSpan> = serde_json::from_str(&body).unwrap();
    assert_eq!(spans.len(), 1, "{body}");
    assert_eq!(spans[0].trace_id, "07".repeat(16));
    let none = get(addr, "/trace?root=Nothing").await;
    assert_eq!(none, "[]");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
