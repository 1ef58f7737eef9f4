//! `/metrics` of a real server stays bounded whatever paths callers make up.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use shop_runtime::{GrpcServerBuilder, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::body::Body;
use tower::ServiceExt as _;

/// A raw unary gRPC call to `path` with an empty message; returns its `grpc-status`.
async fn call(channel: &tonic::transport::Channel, path: &str) -> Option<tonic::Code> {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::new(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))))
        .unwrap();
    let response = channel.clone().oneshot(request).await.unwrap();
    shop_resilience::classify::grpc_code(&response)
}

/// `GET /metrics` over plain HTTP/1.0.
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

#[tokio::test]
async fn made_up_paths_share_one_unknown_series() {
    let mut config = ServerConfig::ephemeral();
    // Most calls are rate limited: those are labelled too, before any routing.
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 5;
    let server = GrpcServerBuilder::new(config, shop_proto::FILE_DESCRIPTOR_SET)
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
        .timeout(Duration::from_secs(5))
        .connect_lazy();

    let mut codes = Vec::new();
    for i in 0..50 {
        codes.push(call(&channel, &format!("/shop.made.up.v{i}.Nope/Call{i}")).await);
    }
    assert!(
        codes.contains(&Some(tonic::Code::Unimplemented)),
        "{codes:?}"
    );
    assert!(
        codes.contains(&Some(tonic::Code::ResourceExhausted)),
        "{codes:?}"
    );

    let text = scrape(admin).await;
    let latency: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("shop_grpc_server_handling_seconds_count{"))
        .collect();
    assert_eq!(
        latency,
        vec![
            r#"shop_grpc_server_handling_seconds_count{grpc_service="unknown",grpc_method="unknown"} 50"#
        ],
        "{text}"
    );
    let handled = text
        .lines()
        .filter(|l| l.starts_with("shop_grpc_server_handled_total{"))
        .count();
    assert_eq!(handled, 2, "one series per status code: {text}");
    assert!(!text.contains("Nope"), "{text}");
    // The rate-limited ones are also counted as rejections, by reason.
    let limited = codes
        .iter()
        .filter(|c| **c == Some(tonic::Code::ResourceExhausted))
        .count();
    assert!(
        text.contains(&format!(
            "shop_grpc_server_rejected_total{{reason=\"rate_limited\"}} {limited}"
        )),
        "{text}"
    );

    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
