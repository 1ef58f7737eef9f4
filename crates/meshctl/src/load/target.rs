//! What `meshctl load` calls: the RPCs of its scenarios and the clients and fixture every
//! worker shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::MeshChannel;
use shop_proto::catalog::{
    GetProductRequest, ListProductsRequest, catalog_service_client::CatalogServiceClient,
};
use shop_proto::identity::{LoginRequest, identity_service_client::IdentityServiceClient};
use shop_proto::orders::order_service_client::OrderServiceClient;

use crate::error::{MeshError, Result};
use crate::state::MeshState;
use crate::{fixture, seed};

/// The RPCs of the mix, with their weights out of 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Rpc {
    ListProducts,
    GetProduct,
    Login,
    PlaceOrder,
}

/// The clients and the fixture every worker uses.
#[derive(Clone)]
pub(super) struct Target {
    catalog: CatalogServiceClient<MeshChannel>,
    /// `None` in the `place-order` scenario, which makes no logins.
    identity: Option<IdentityServiceClient<MeshChannel>>,
    product_id: String,
    email: String,
    /// Set for the `place-order` scenario.
    orders: Option<OrderTarget>,
}

/// What `PlaceOrder` calls need: the client, what to order, and a count for unique keys.
#[derive(Clone)]
struct OrderTarget {
    client: OrderServiceClient<MeshChannel>,
    customer_id: String,
    product_id: String,
    tag: String,
    placed: Arc<AtomicU64>,
}

// === impl Rpc ===

impl Rpc {
    /// Draws one call of the mix: 75 % list, 20 % get, 5 % login.
    pub(super) fn draw() -> Self {
        match fastrand::u8(0..100) {
            0..75 => Self::ListProducts,
            75..95 => Self::GetProduct,
            _ => Self::Login,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::ListProducts => "CatalogService/ListProducts",
            Self::GetProduct => "CatalogService/GetProduct",
            Self::Login => "IdentityService/Login",
            Self::PlaceOrder => "OrderService/PlaceOrder",
        }
    }
}

// === impl Target ===

impl Target {
    /// Registers the user and creates the product the mix reads.
    pub(super) async fn create(
        mut catalog: CatalogServiceClient<MeshChannel>,
        mut identity: IdentityServiceClient<MeshChannel>,
    ) -> Result<Self> {
        let tag = fixture::tag();
        let email = format!("load-{tag}@example.com");
        fixture::register(&mut identity, &email, format!("Load {tag}")).await?;
        let product = fixture::kitchen_product(
            &mut catalog,
            format!("LOAD-{tag}"),
            format!("Load test kettle {tag}"),
            "Made by meshctl load.",
            (30, 0),
        )
        .await?;
        Ok(Self {
            catalog,
            identity: Some(identity),
            product_id: product.product_id,
            email,
            orders: None,
        })
    }

    /// The clients for `place-order`: the seeded bulk product, a customer of this run.
    pub(super) async fn for_orders(state: &MeshState) -> Result<Self> {
        let (customer_id, token) = fixture::customer(state, "load").await?;
        let client = OrderServiceClient::new(state.user_channel("orders", &token)?);
        let seeded = seed::seed(state).await?;
        let tea = seeded
            .into_iter()
            .find(|s| s.seed.sku == seed::TEA.sku)
            .ok_or_else(|| MeshError::Usage(format!("{} was not seeded", seed::TEA.sku)))?;
        Ok(Self {
            catalog: CatalogServiceClient::new(state.channel("catalog")?),
            identity: None,
            product_id: tea.product.product_id.clone(),
            email: String::new(),
            orders: Some(OrderTarget {
                client,
                customer_id,
                product_id: tea.product.product_id,
                tag: fixture::tag(),
                placed: Arc::new(AtomicU64::new(0)),
            }),
        })
    }

    pub(super) async fn call(&mut self, rpc: Rpc) -> std::result::Result<(), tonic::Status> {
        match rpc {
            Rpc::ListProducts => self
                .catalog
                .list_products(ListProductsRequest {
                    page_size: 20,
                    page_token: String::new(),
                    category: String::new(),
                })
                .await
                .map(drop),
            Rpc::GetProduct => self
                .catalog
                .get_product(GetProductRequest {
                    product_id: self.product_id.clone(),
                })
                .await
                .map(drop),
            Rpc::Login => {
                let Some(identity) = self.identity.as_mut() else {
                    return Err(tonic::Status::failed_precondition("no identity client"));
                };
                let login = LoginRequest {
                    email: self.email.clone(),
                    password: fixture::PASSWORD.into(),
                };
                identity.login(login).await.map(drop)
            }
            Rpc::PlaceOrder => {
                let Some(orders) = self.orders.as_mut() else {
                    return Err(tonic::Status::failed_precondition("no orders client"));
                };
                let n = orders.placed.fetch_add(1, Ordering::Relaxed);
                let request = fixture::place_order_request(
                    format!("meshctl-load-{}-{n}", orders.tag),
                    &orders.customer_id,
                    &orders.product_id,
                    1,
                    "tok_visa",
                );
                orders.client.place_order(request).await.map(drop)
            }
        }
    }
}
