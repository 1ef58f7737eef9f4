//! What `demo` and `load` create in the mesh: users, kitchen products and orders.

use crate::state::MeshChannel;
use shop_proto::catalog::{
    CreateProductRequest, Product, catalog_service_client::CatalogServiceClient,
};
use shop_proto::common::{Money, PostalAddress};
use shop_proto::identity::{RegisterRequest, identity_service_client::IdentityServiceClient};
use shop_proto::orders::{CartLine, PlaceOrderRequest};

use crate::error::{MeshError, Result};

/// The password of every user meshctl registers.
pub const PASSWORD: &str = "correct horse battery staple";

/// A short random tag that keeps names, emails and SKUs of one run apart from other runs'.
pub fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Registers `email` with [`PASSWORD`]; returns the new user's id.
pub async fn register(
    identity: &mut IdentityServiceClient<MeshChannel>,
    email: &str,
    display_name: String,
) -> Result<String> {
    let registered = identity
        .register(RegisterRequest {
            email: email.to_owned(),
            password: PASSWORD.into(),
            display_name,
        })
        .await
        .map_err(|s| MeshError::rpc("IdentityService/Register", s))?
        .into_inner();
    Ok(registered.user.map(|u| u.user_id).unwrap_or_default())
}

/// A customer of this run: registers a fresh user and logs in; returns its id and access token.
pub async fn customer(state: &crate::state::MeshState, what: &str) -> Result<(String, String)> {
    let mut identity = IdentityServiceClient::new(state.channel("identity")?);
    let tag = tag();
    let email = format!("{what}-{tag}@example.com");
    let user_id = register(&mut identity, &email, format!("{what} {tag}")).await?;
    let token = login(&mut identity, &email).await?;
    Ok((user_id, token))
}

/// Logs `email` in with [`PASSWORD`]; returns the access token.
pub async fn login(
    identity: &mut IdentityServiceClient<MeshChannel>,
    email: &str,
) -> Result<String> {
    let login = identity
        .login(shop_proto::identity::LoginRequest {
            email: email.to_owned(),
            password: PASSWORD.into(),
        })
        .await
        .map_err(|s| MeshError::rpc("IdentityService/Login", s))?
        .into_inner();
    Ok(login.access_token)
}

/// Creates a kitchen product priced `units.nanos` EUR, with an idempotency key derived from its
/// SKU (`meshctl-<sku in lower case>`).
pub async fn kitchen_product(
    catalog: &mut CatalogServiceClient<MeshChannel>,
    sku: String,
    name: String,
    description: &str,
    (units, nanos): (i64, i32),
) -> Result<Product> {
    let idempotency_key = format!("meshctl-{}", sku.to_lowercase());
    let created = catalog
        .create_product(CreateProductRequest {
            sku,
            name,
            description: description.into(),
            category: "kitchen".into(),
            price: Some(Money {
                units,
                nanos,
                currency_code: "EUR".into(),
            }),
            idempotency_key,
        })
        .await
        .map_err(|s| MeshError::rpc("CatalogService/CreateProduct", s))?
        .into_inner();
    Ok(created.product.unwrap_or_default())
}

/// A `PlaceOrder` of `quantity` of `product_id` for `customer_id`, paid with
/// `payment_method_token` (the simulated processor declines `tok_decline` and
/// `tok_insufficient` and authorizes anything else), shipped to a fixed demo address.
#[must_use]
pub fn place_order_request(
    idempotency_key: String,
    customer_id: &str,
    product_id: &str,
    quantity: i32,
    payment_method_token: &str,
) -> PlaceOrderRequest {
    PlaceOrderRequest {
        idempotency_key,
        customer_id: customer_id.to_owned(),
        lines: vec![CartLine {
            product_id: product_id.to_owned(),
            quantity,
        }],
        shipping_address: Some(PostalAddress {
            recipient_name: "Ada Mesh".into(),
            line1: "1 Mesh Street".into(),
            line2: String::new(),
            city: "Berlin".into(),
            region: String::new(),
            postal_code: "10115".into(),
            country_code: "DE".into(),
        }),
        payment_method_token: payment_method_token.to_owned(),
    }
}
