//! `collect` against tiny HTTP servers on port 0: a good body is decoded, and each way a
//! service can fail to answer is an error naming the service.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use shop_invariants::{CollectError, Targets, collect};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// Serves `response` (status line onwards) to every connection, after reading the request.
async fn serve(response: impl Into<String>) -> SocketAddr {
    let response: String = response.into();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0_u8; 1024];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    addr
}

fn shipping_at(addr: SocketAddr) -> Targets {
    Targets {
        shipping: Some(addr),
        timeout: Duration::from_secs(2),
        ..Targets::default()
    }
}

const SHIPPING: &str = r#"{"shipments":[{"shipment_id":"s","order_id":"o","status":"IN_TRANSIT","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:01.5Z"}],"outbox":{"unpublished":0,"parked":0}}"#;

#[tokio::test]
async fn a_good_body_is_decoded_and_the_rest_is_not_read() {
    let body = SHIPPING;
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let state = collect(&shipping_at(serve(response).await)).await.unwrap();
    let shipping = state.shipping.unwrap();
    assert_eq!(shipping.shipments.len(), 1);
    assert_eq!(shipping.shipments[0].status.name(), "IN_TRANSIT");
    assert!(state.orders.is_none() && state.jetstream.is_none());
}

#[tokio::test]
async fn a_chunked_body_is_decoded() {
    let response = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{SHIPPING}\r\n0\r\n\r\n",
        SHIPPING.len()
    );
    let state = collect(&shipping_at(serve(response).await)).await.unwrap();
    assert_eq!(state.shipping.unwrap().shipments.len(), 1);
}

#[tokio::test]
async fn an_error_status_is_reported_with_its_body() {
    let addr =
        serve("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 9\r\n\r\nshipments").await;
    let err = collect(&shipping_at(addr)).await.unwrap_err();
    assert!(
        matches!(&err, CollectError::Status { service: "shipping", status: 500, body } if body == "shipments"),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unexpected_shape_is_a_decode_error() {
    let addr = serve("HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{\"orders\":[]}").await;
    let err = collect(&shipping_at(addr)).await.unwrap_err();
    assert!(
        matches!(
            err,
            CollectError::Decode {
                service: "shipping",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_closed_port_and_a_silent_one_are_errors() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let err = collect(&shipping_at(closed)).await.unwrap_err();
    assert!(matches!(err, CollectError::Connect { .. }), "{err:?}");

    // Accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let targets = Targets {
        timeout: Duration::from_millis(200),
        ..shipping_at(silent.local_addr().unwrap())
    };
    let err = collect(&targets).await.unwrap_err();
    assert!(
        matches!(
            err,
            CollectError::Timeout {
                part: "shipping",
                ..
            }
        ),
        "{err:?}"
    );
    drop(silent);
}
