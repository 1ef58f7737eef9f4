//! Why a mesh state could not be collected.

use std::net::SocketAddr;
use std::time::Duration;

/// A part of the mesh that could not be read; the check does not run on half a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The admin port did not accept a connection.
    #[error("{service}: connecting to {addr}")]
    Connect {
        service: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// HTTP/1.1 failed on the connection.
    #[error("{service}: HTTP to {addr}")]
    Http {
        service: &'static str,
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The request could not be built (a bad path).
    #[error("request: {0}")]
    Request(String),
    /// The body could not be read, or was too large.
    #[error("{service}: reading the body: {detail}")]
    Body {
        service: &'static str,
        detail: String,
    },
    /// `/admin/state` answered something other than 200.
    #[error("{service}: /admin/state answered {status}: {body}")]
    Status {
        service: &'static str,
        status: u16,
        body: String,
    },
    /// The body is not the shape `types` expects.
    #[error("{service}: /admin/state is not in the expected shape")]
    Decode {
        service: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// NATS or JetStream refused a request.
    #[error("NATS: {what}: {detail}")]
    Nats { what: String, detail: String },
    /// A part took longer than the timeout.
    #[error("{part}: no answer within {after:?}")]
    Timeout { part: &'static str, after: Duration },
}
