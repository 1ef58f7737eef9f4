//! A TCP proxy that injects network faults between a client and an upstream server.
//!
//! ```no_run
//! # async fn demo(upstream: std::net::SocketAddr) -> std::io::Result<()> {
//! use shop_testkit::fault_proxy::{Fault, FaultProxy};
//! let proxy = FaultProxy::start(upstream).await?;
//! // point the client at proxy.addr() ...
//! proxy.set(Fault::Latency(std::time::Duration::from_millis(50)));
//! proxy.set(Fault::Blackhole);
//! proxy.set(Fault::Pass);
//! # Ok(()) }
//! ```
//!
//! Faults switch at runtime and apply to connections already open as well as new ones:
//! - [`Fault::Pass`]: bytes flow unchanged.
//! - [`Fault::Latency`]: every chunk is held for the given time before it is forwarded.
//! - [`Fault::Reset`]: open connections are aborted with a TCP RST (`SO_LINGER` 0) and new ones
//!   are reset right after accept.
//! - [`Fault::Blackhole`]: connections are accepted (or kept) but nothing is forwarded and
//!   nothing is answered. A blackholed connection stays dead after the fault is lifted, like a
//!   real broken path; new connections work again.
//!
//! Dropping the proxy closes the listener and every connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The fault the proxy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything unchanged.
    Pass,
    /// Delay every forwarded chunk by this much.
    Latency(Duration),
    /// Abort connections with a TCP reset.
    Reset,
    /// Accept but never forward or answer.
    Blackhole,
}

/// A running fault proxy on `127.0.0.1` in front of one upstream address.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 forwarding to `upstream`, in [`Fault::Pass`].
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (fault, faults) = watch::channel(Fault::Pass);
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(listener, upstream, faults, accepted.clone()));
        Ok(Self {
            addr,
            fault,
            accepted,
            task,
        })
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault; open connections see it on their next event.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<Fault>,
    accepted: Arc<AtomicUsize>,
) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                tracing::debug!(%error, "fault proxy accept failed");
                continue;
            }
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        connections.spawn(connection(client, upstream, faults.clone()));
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut faults: watch::Receiver<Fault>) {
    let fault = *faults.borrow_and_update();
    match fault {
        Fault::Reset => return reset(&client),
        Fault::Blackhole => return blackhole(client, None, faults).await,
        Fault::Pass | Fault::Latency(_) => {}
    }
    // The upstream is gone: the client sees its connection aborted.
    let Ok(server) = TcpStream::connect(upstream).await else {
        return reset(&client);
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    forward(client, server, faults).await;
}

/// Aborts the connection with an RST instead of a FIN.
fn reset(stream: &TcpStream) {
    if let Err(error) = stream.set_zero_linger() {
        tracing::debug!(%error, "could not set SO_LINGER 0; closing normally");
    }
}

/// Pumps bytes both ways, applying the current fault to each chunk.
async fn forward(mut client: TcpStream, mut server: TcpStream, mut faults: watch::Receiver<Fault>) {
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    let (mut client_open, mut server_open) = (true, true);
    while client_open || server_open {
        let (chunk, to_server) = tokio::select! {
            read = client.read(&mut up), if client_open => match read {
                Ok(0) | Err(_) => {
                    client_open = false;
                    let _ = server.shutdown().await;
                    continue;
                }
                Ok(n) => (&up[..n], true),
            },
            read = server.read(&mut down), if server_open => match read {
                Ok(0) | Err(_) => {
                    server_open = false;
                    let _ = client.shutdown().await;
                    continue;
                }
                Ok(n) => (&down[..n], false),
            },
            changed = faults.changed() => {
                if changed.is_err() {
                    return;
                }
                let fault = *faults.borrow_and_update();
                match fault {
                    Fault::Reset => return reset_both(&client, &server),
                    Fault::Blackhole => return blackhole(client, Some(server), faults).await,
                    Fault::Pass | Fault::Latency(_) => continue,
                }
            }
        };
        let fault = *faults.borrow();
        match fault {
            Fault::Pass => {}
            Fault::Latency(delay) => tokio::time::sleep(delay).await,
            Fault::Reset => return reset_both(&client, &server),
            Fault::Blackhole => return blackhole(client, Some(server), faults).await,
        }
        let target = if to_server { &mut server } else { &mut client };
        if target.write_all(chunk).await.is_err() {
            return;
        }
    }
}

fn reset_both(client: &TcpStream, server: &TcpStream) {
    reset(client);
    reset(server);
}

/// Holds the connection open and swallows everything until a reset is asked for.
async fn blackhole(
    mut client: TcpStream,
    server: Option<TcpStream>,
    mut faults: watch::Receiver<Fault>,
) {
    let mut sink = vec![0u8; 16 * 1024];
    let mut client_open = true;
    loop {
        tokio::select! {
            read = client.read(&mut sink), if client_open => {
                if matches!(read, Ok(0) | Err(_)) {
                    client_open = false;
                }
            }
            changed = faults.changed() => {
                if changed.is_err() {
                    return;
                }
                let fault = *faults.borrow_and_update();
                if fault == Fault::Reset {
                    reset(&client);
                    if let Some(server) = &server {
                        reset(server);
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn passes_resets_and_blackholes() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut stream).await.unwrap(), b"ping");

        proxy.set(Fault::Latency(Duration::from_millis(20)));
        assert_eq!(roundtrip(&mut stream).await.unwrap(), b"ping");

        proxy.set(Fault::Reset);
        let mut buf = [0u8; 1];
        let read = stream.read(&mut buf).await;
        assert!(
            matches!(&read, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "{read:?}"
        );

        proxy.set(Fault::Blackhole);
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(b"ping").await.unwrap();
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        assert!(read.is_err(), "blackholed connection answered: {read:?}");

        proxy.set(Fault::Pass);
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut stream).await.unwrap(), b"ping");
        assert_eq!(proxy.accepted(), 3);
    }
}
