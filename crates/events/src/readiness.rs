//! NATS as a readiness dependency of a service.
//!
//! Implements the leaf `shop-readiness` trait, so this library does not depend on the service
//! kit; the service decides whether NATS gates its traffic or is only reported.

use async_nats::{Client, connection::State};
use futures::future::BoxFuture;
use shop_readiness::ReadinessCheck;

/// Up while the client is connected to a NATS server; async-nats reconnects on its own. A
/// service whose RPCs publish through an outbox registers this as reported only, so an outage
/// does not take it out of traffic.
#[derive(Debug, Clone)]
pub struct NatsReadiness {
    client: Client,
}

impl NatsReadiness {
    /// A check of `client`'s connection.
    #[must_use]
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl ReadinessCheck for NatsReadiness {
    fn name(&self) -> &str {
        "nats"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let state = self.client.connection_state();
        Box::pin(async move {
            match state {
                State::Connected => Ok(()),
                other => Err(format!("connection {other:?}")),
            }
        })
    }
}
