//! A real server with traces on: a call whose caller sampled its trace continues that trace,
//! and its latency bucket in `/metrics` carries the trace id as an OpenMetrics exemplar; an
//! unsampled call leaves none. One test per binary: the subscriber is process-global.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use opentelemetry::trace::TracerProvider as _;
use shop_runtime::{GrpcServerBuilder, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing_subscriber::layer::SubscriberExt as _;

async fn scrape(admin: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

fn exemplars(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            l.starts_with("shop_grpc_server_handling_seconds_bucket{") && l.contains(" # {")
        })
        .collect()
}

#[tokio::test]
async fn sampled_calls_are_latency_exemplars() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test"))),
    )
    .unwrap();

    let server = GrpcServerBuilder::new(ServerConfig::ephemeral(), shop_proto::FILE_DESCRIPTOR_SET)
        .bind()
        .await
        .unwrap();
    let (grpc, admin) = (server.grpc_addr(), server.admin_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let call = |flags: &'static str| {
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        request.metadata_mut().insert(
            "traceparent",
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}")
                .parse()
                .unwrap(),
        );
        request
    };

    health.check(call("00")).await.unwrap();
    let text = scrape(admin).await;
    assert!(exemplars(&text).is_empty(), "unsampled: {text}");

    health.check(call("01")).await.unwrap();
    let text = scrape(admin).await;
    let found = exemplars(&text);
    assert_eq!(found.len(), 1, "{text}");
    assert!(
        found[0].contains(r#"# {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"}"#),
        "{text}"
    );

    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
