//! Asking a service how it is: the admin `/readyz` endpoint and `grpc.health.v1`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::error::{MeshError, Result};

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The status code of `GET http://addr/path` (HTTP/1.0, enough for the admin server).
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        stream.take(1024).read_to_end(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()?
        .ok()?;
    parse_status(&String::from_utf8_lossy(&head))
}

/// The status code of an HTTP response's status line.
fn parse_status(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

/// Whether `/readyz` on `admin` answers 200.
pub async fn is_ready(admin: SocketAddr) -> bool {
    http_status(admin, "/readyz").await == Some(200)
}

/// A lazily connecting channel to `http://addr` with short timeouts.
pub fn channel(addr: SocketAddr) -> Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| MeshError::Connect {
            addr: addr.to_string(),
            source,
        })
        .map(|endpoint| {
            endpoint
                .connect_timeout(PROBE_TIMEOUT)
                .timeout(Duration::from_secs(10))
                .connect_lazy()
        })
}

/// The overall (`""`) `grpc.health.v1` status of the server on `addr`, e.g. `SERVING`.
pub async fn grpc_health(addr: SocketAddr) -> Result<String> {
    let mut client = HealthClient::new(channel(addr)?);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| MeshError::rpc("grpc.health.v1.Health/Check", status))?;
    Ok(ServingStatus::try_from(response.into_inner().status)
        .map_or_else(|_| "UNKNOWN".to_owned(), |s| s.as_str_name().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status("HTTP/1.1 200 OK\r\n\r\nready\n"), Some(200));
        assert_eq!(
            parse_status("HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status("SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(""), None);
    }

    #[tokio::test]
    async fn nothing_listening_is_not_ready() {
        let port = shop_testkit::free_port().unwrap();
        assert!(!is_ready(crate::services::loopback(port)).await);
        assert!(grpc_health(crate::services::loopback(port)).await.is_err());
    }
}
