//! Reads a [`MeshState`]: every service's `GET /admin/state` over HTTP/1.1, and JetStream's
//! dead letters and durable consumers over the NATS client protocol.
//!
//! Services are read one after another in the order the order saga writes them backwards:
//! orders first, then payments, inventory and shipping, then JetStream. What orders reports
//! as done was done in the others before, so it is there when they are read; the other way
//! round (a capture seen before its order is confirmed) is what the grace period covers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt as _;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::error::CollectError;
use crate::types::{ConsumerPosition, JetStreamState, MeshState};

/// The dead-letter stream of `shop-events`.
pub const DLQ_STREAM: &str = "SHOP_DLQ";

/// The largest `/admin/state` body read.
const MAX_BODY_BYTES: usize = 64 << 20;

/// Where to read the mesh from: each service's admin address and NATS; what is `None` is not
/// read (its rules are skipped).
#[derive(Debug, Clone)]
pub struct Targets {
    pub orders: Option<SocketAddr>,
    pub inventory: Option<SocketAddr>,
    pub payments: Option<SocketAddr>,
    pub shipping: Option<SocketAddr>,
    /// `nats://host:port`.
    pub nats_url: Option<String>,
    /// How long each read may take.
    pub timeout: Duration,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            orders: None,
            inventory: None,
            payments: None,
            shipping: None,
            nats_url: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Reads everything `targets` names; fails on the first part that cannot be read.
pub async fn collect(targets: &Targets) -> Result<MeshState, CollectError> {
    let timeout = targets.timeout;
    Ok(MeshState {
        orders: read_state("orders", targets.orders, timeout).await?,
        payments: read_state("payments", targets.payments, timeout).await?,
        inventory: read_state("inventory", targets.inventory, timeout).await?,
        shipping: read_state("shipping", targets.shipping, timeout).await?,
        jetstream: match &targets.nats_url {
            // Boxed: the JetStream client's futures are large.
            Some(url) => Some(within(timeout, "nats", Box::pin(jetstream(url))).await?),
            None => None,
        },
    })
}

async fn read_state<T: DeserializeOwned>(
    service: &'static str,
    admin: Option<SocketAddr>,
    timeout: Duration,
) -> Result<Option<T>, CollectError> {
    let Some(admin) = admin else {
        return Ok(None);
    };
    let body = within(timeout, service, get(service, admin, "/admin/state")).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|source| CollectError::Decode { service, source })
}

async fn within<T>(
    timeout: Duration,
    part: &'static str,
    read: impl Future<Output = Result<T, CollectError>>,
) -> Result<T, CollectError> {
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| CollectError::Timeout {
            part,
            after: timeout,
        })?
}

/// `GET path` on `addr`, one request on its own connection; the body of a 200.
pub async fn get(
    service: &'static str,
    addr: SocketAddr,
    path: &str,
) -> Result<Bytes, CollectError> {
    let http = |source| CollectError::Http {
        service,
        addr,
        source,
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| CollectError::Connect {
            service,
            addr,
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| CollectError::Request(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| CollectError::Body {
            service,
            detail: e.to_string(),
        })?
        .to_bytes();
    driver.abort();
    if status != hyper::StatusCode::OK {
        return Err(CollectError::Status {
            service,
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        });
    }
    Ok(body)
}

/// The dead letters and every durable consumer's position.
pub async fn jetstream(url: &str) -> Result<JetStreamState, CollectError> {
    let nats = |what: &str, err: &dyn std::fmt::Display| CollectError::Nats {
        what: what.to_owned(),
        detail: err.to_string(),
    };
    let client = async_nats::ConnectOptions::new()
        .name("shop-invariants")
        .connect(url)
        .await
        .map_err(|e| nats("connect", &e))?;
    let js = async_nats::jetstream::new(client);
    let streams: Vec<_> = js
        .streams()
        .try_collect()
        .await
        .map_err(|e| nats("list streams", &e))?;
    let mut state = JetStreamState::default();
    for info in streams {
        let name = info.config.name;
        if name == DLQ_STREAM {
            state.dead_letters = info.state.messages;
            continue;
        }
        let stream = js
            .get_stream(&name)
            .await
            .map_err(|e| nats(&format!("stream {name}"), &e))?;
        let consumers: Vec<_> = stream
            .consumers()
            .try_collect()
            .await
            .map_err(|e| nats(&format!("consumers of {name}"), &e))?;
        for consumer in consumers {
            let Some(durable) = consumer.config.durable_name else {
                continue;
            };
            state.consumers.push(ConsumerPosition {
                stream: name.clone(),
                durable,
                pending: consumer.num_pending,
                ack_pending: consumer.num_ack_pending as u64,
                last_ack_at: consumer.ack_floor.last_active,
                created_at: consumer.created,
            });
        }
    }
    state
        .consumers
        .sort_by(|a, b| (&a.stream, &a.durable).cmp(&(&b.stream, &b.durable)));
    Ok(state)
}
