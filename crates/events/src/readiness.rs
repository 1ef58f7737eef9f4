//! NATS as a readiness dependency of a service.

use async_nats::{Client, connection::State};
use futures::future::BoxFuture;
use shop_runtime::readiness::ReadinessCheck;

/// Ready while the client is connected to a NATS server. async-nats reconnects on its own;
/// while it does, the service reports NOT_SERVING.
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
