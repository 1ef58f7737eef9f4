//! Asking a service how it is: the admin `/readyz` and `/metrics` endpoints and
//! `grpc.health.v1`.

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

/// The largest `/metrics` page read.
const MAX_METRICS_BYTES: u64 = 4 << 20;

/// The first `limit` bytes of the answer to `GET http://addr/path` (HTTP/1.0, enough for the
/// admin server).
pub async fn http_get(addr: SocketAddr, path: &str, limit: u64) -> Option<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(limit).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// The status code of `GET http://addr/path`.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    parse_status(&http_get(addr, path, 1024).await?)
}

/// The circuit breakers the service on `admin` reports in `/metrics`: `(dependency, state)`,
/// sorted by dependency; `None` if `/metrics` did not answer 200.
pub async fn breakers(admin: SocketAddr) -> Option<Vec<(String, String)>> {
    let answer = http_get(admin, "/metrics", MAX_METRICS_BYTES).await?;
    (parse_status(&answer)? == 200).then(|| parse_breakers(&answer))
}

/// Reads `shop_client_breaker_state{dependency="..",state=".."} 1` lines (the current state of
/// each breaker; other states carry 0).
fn parse_breakers(metrics: &str) -> Vec<(String, String)> {
    let label = |labels: &str, name: &str| {
        labels.split(',').find_map(|pair| {
            let value = pair.trim().strip_prefix(name)?.strip_prefix("=\"")?;
            value.strip_suffix('"').map(str::to_owned)
        })
    };
    let mut found: Vec<(String, String)> = metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("shop_client_breaker_state{")?;
            let (labels, value) = rest.rsplit_once("} ")?;
            if value.trim() != "1" {
                return None;
            }
            Some((label(labels, "dependency")?, label(labels, "state")?))
        })
        .collect();
    found.sort();
    found
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

/// A lazily connecting channel to `addr` with short timeouts: mutual TLS through `tls` when
/// given, else plaintext.
pub fn channel(addr: SocketAddr, tls: Option<shop_tls::MtlsConnector>) -> Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| MeshError::Connect {
            addr: addr.to_string(),
            source,
        })
        .map(|endpoint| {
            let endpoint = endpoint
                .connect_timeout(PROBE_TIMEOUT)
                .timeout(Duration::from_secs(10));
            match tls {
                Some(connector) => endpoint.connect_with_connector_lazy(connector),
                None => endpoint.connect_lazy(),
            }
        })
}

/// The overall (`""`) `grpc.health.v1` status of the server `channel` reaches, e.g. `SERVING`.
pub async fn grpc_health(channel: Channel) -> Result<String> {
    let mut client = HealthClient::new(channel);
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

    #[test]
    fn reads_the_current_state_of_each_breaker() {
        let metrics = "# HELP shop_client_breaker_state Circuit breaker...\n\
            # TYPE shop_client_breaker_state gauge\n\
            shop_client_breaker_state{dependency=\"payments\",state=\"open\"} 1\n\
            shop_client_breaker_state{dependency=\"payments\",state=\"closed\"} 0\n\
            shop_client_breaker_state{dependency=\"catalog\",state=\"closed\"} 1\n\
            shop_client_breaker_state{dependency=\"catalog\",state=\"open\"} 0\n\
            shop_grpc_server_in_flight 1\n";
        assert_eq!(
            parse_breakers(metrics),
            vec![
                ("catalog".to_owned(), "closed".to_owned()),
                ("payments".to_owned(), "open".to_owned())
            ]
        );
        assert!(parse_breakers("shop_grpc_server_in_flight 0\n").is_empty());
    }

    #[tokio::test]
    async fn nothing_listening_is_not_ready() {
        let port = shop_testkit::free_port().unwrap();
        assert!(!is_ready(crate::services::loopback(port)).await);
        assert!(
            grpc_health(channel(crate::services::loopback(port), None).unwrap())
                .await
                .is_err()
        );
        assert_eq!(breakers(crate::services::loopback(port)).await, None);
    }
}
