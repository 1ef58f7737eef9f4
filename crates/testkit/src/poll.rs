//! Small helpers for tests: free ports, polling instead of sleeping, a minimal HTTP GET.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::error::{IoContext, Result, TestkitError};

/// First and last pause between two polls: start fast, back off to keep CPU free.
const FIRST_POLL: Duration = Duration::from_millis(5);
const MAX_POLL: Duration = Duration::from_millis(100);

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
///
/// Another process may take it before it is used; servers started by the test kit retry
/// with a new port when their bind fails.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context(|| "bind 127.0.0.1:0 to find a free port".into())?;
    let addr = listener
        .local_addr()
        .context(|| "read the address of a listener on port 0".into())?;
    Ok(addr.port())
}

/// Polls `check` until it returns `true`, or fails with [`TestkitError::Timeout`].
///
/// ```no_run
/// # async fn demo() -> shop_testkit::Result<()> {
/// use std::time::Duration;
/// shop_testkit::wait_until(Duration::from_secs(5), || async { 1 + 1 == 2 }).await?;
/// # Ok(()) }
/// ```
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `probe` until it returns `Some(value)` and returns that value, or fails with
/// [`TestkitError::Timeout`].
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = FIRST_POLL;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TestkitError::Timeout {
                what: "a polled condition".into(),
                after: timeout,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// The status code and body of a plain HTTP/1.0 `GET` (enough for monitoring endpoints).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| TestkitError::Timeout {
            what: format!("GET http://{addr}{path}"),
            after: Duration::from_secs(5),
        })?
        .context(|| format!("GET http://{addr}{path}"))?;
    parse_response(&String::from_utf8_lossy(&response)).ok_or_else(|| TestkitError::Protocol {
        what: format!("http://{addr}{path}"),
        detail: "not an HTTP response".into(),
    })
}

fn parse_response(text: &str) -> Option<(u16, String)> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let parsed =
            parse_response("HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\n{\"status\":\"ok\"}");
        assert_eq!(parsed, Some((200, "{\"status\":\"ok\"}".to_owned())));
        assert_eq!(parse_response("garbage"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_times_out_and_succeeds() {
        let err = wait_until(Duration::from_secs(1), || async { false }).await;
        assert!(matches!(err, Err(TestkitError::Timeout { .. })));
        let mut n = 0;
        let got = wait_for(Duration::from_secs(1), || {
            n += 1;
            let n = n;
            async move { (n == 3).then_some(n) }
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
    }
}
