//! The services orders calls, each through the kit's resilient client (deadline, retries of
//! the RPCs the contracts mark idempotent, bulkhead, circuit breaker; see
//! `shop_runtime::client`). Their breakers show on `/metrics` and in `meshctl status`.

use shop_proto::{
    catalog::catalog_service_client::CatalogServiceClient,
    inventory::inventory_service_client::InventoryServiceClient,
    payments::payment_service_client::PaymentServiceClient,
};
use shop_runtime::{
    GrpcServerBuilder, RuntimeError,
    client::{self, DependencyConfig, ResilientChannel},
};

use crate::config::DependenciesConfig;

/// Clients of catalog, inventory and payments. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Clients {
    pub catalog: CatalogServiceClient<ResilientChannel>,
    pub inventory: InventoryServiceClient<ResilientChannel>,
    pub payments: PaymentServiceClient<ResilientChannel>,
}

/// Why the clients could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    /// An address is not `http://host:port`.
    #[error(transparent)]
    Target(#[from] client::BadTarget),
    /// A client stack (or its TLS) could not be built.
    #[error(transparent)]
    Client(#[from] RuntimeError),
}

fn dependency(
    name: &str,
    url: &str,
    timeout_ms: u64,
    breaker_failures: u32,
    breaker_open_ms: u64,
) -> Result<DependencyConfig, client::BadTarget> {
    let mut dependency = client::dependency(name, "orders", url)?;
    dependency.timeout = Some(std::time::Duration::from_millis(timeout_ms));
    dependency.breaker.consecutive_failures = breaker_failures;
    dependency.breaker.open_timeout = std::time::Duration::from_millis(breaker_open_ms);
    Ok(dependency)
}

impl Clients {
    /// Connects (lazily) to every dependency, over mutual TLS when the server has it, and
    /// reports their breakers in the server's metrics.
    pub async fn connect(
        config: &DependenciesConfig,
        server: &GrpcServerBuilder,
    ) -> Result<Self, ClientsError> {
        let c = config;
        let catalog = dependency(
            "catalog",
            &c.catalog_url,
            c.catalog_timeout_ms,
            c.breaker_failures,
            c.breaker_open_ms,
        )?;
        let inventory = dependency(
            "inventory",
            &c.inventory_url,
            c.inventory_timeout_ms,
            c.breaker_failures,
            c.breaker_open_ms,
        )?;
        let payments = dependency(
            "payments",
            &c.payments_url,
            c.payments_timeout_ms,
            c.breaker_failures,
            c.breaker_open_ms,
        )?;
        Ok(Self {
            catalog: CatalogServiceClient::new(server.connect(&catalog).await?),
            inventory: InventoryServiceClient::new(server.connect(&inventory).await?),
            payments: PaymentServiceClient::new(server.connect(&payments).await?),
        })
    }
}
