//! What `demo` and `load` create in the mesh: users and kitchen products.

use shop_proto::catalog::{
    CreateProductRequest, Product, catalog_service_client::CatalogServiceClient,
};
use shop_proto::common::Money;
use shop_proto::identity::{RegisterRequest, identity_service_client::IdentityServiceClient};
use tonic::transport::Channel;

use crate::error::{MeshError, Result};

/// The password of every user meshctl registers.
pub const PASSWORD: &str = "correct horse battery staple";

/// A short random tag that keeps names, emails and SKUs of one run apart from other runs'.
pub fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Registers `email` with [`PASSWORD`]; returns the new user's id.
pub async fn register(
    identity: &mut IdentityServiceClient<Channel>,
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

/// Creates a kitchen product priced `units.nanos` EUR, with an idempotency key derived from its
/// SKU (`meshctl-<sku in lower case>`).
pub async fn kitchen_product(
    catalog: &mut CatalogServiceClient<Channel>,
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
