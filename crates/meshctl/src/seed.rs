//! The demo data `up` puts into the mesh: a few products in catalog, each with stock in
//! inventory.
//!
//! Seeding is idempotent across runs. A product is created with an idempotency key derived
//! from its SKU, so a second `up` gets the same product back (and finds it by SKU among the
//! listed products if it was created some other way). Stock is topped up to the product's
//! target: the adjustment's key names the stock it starts from, so a retried call is applied
//! once and a later run tops up again what orders used.

use crate::state::MeshChannel;
use shop_proto::catalog::{
    ListProductsRequest, Product, catalog_service_client::CatalogServiceClient,
};
use shop_proto::inventory::{
    AdjustStockRequest, GetStockRequest, Stock, inventory_service_client::InventoryServiceClient,
};

use crate::error::{MeshError, Result};
use crate::fixture;
use crate::state::MeshState;

/// One seeded product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedProduct {
    /// Its SKU (stable: it identifies the product across runs).
    pub sku: &'static str,
    /// Its name.
    pub name: &'static str,
    /// Price in EUR, `(units, nanos)`.
    pub price: (i64, i32),
    /// Available stock each `up` tops it up to.
    pub stock: i64,
}

/// The mug the demo's confirmed and declined orders buy.
pub const MUG: SeedProduct = SeedProduct {
    sku: "MESH-MUG",
    name: "Mesh mug",
    price: (12, 500_000_000),
    stock: 100,
};

/// The lamp of which there are only a few: the demo's out-of-stock order asks for more.
pub const LAMP: SeedProduct = SeedProduct {
    sku: "MESH-LAMP",
    name: "Limited mesh lamp",
    price: (49, 0),
    stock: 2,
};

/// What `meshctl load` orders: enough that a long run does not sell out.
pub const TEA: SeedProduct = SeedProduct {
    sku: "MESH-TEA",
    name: "Mesh tea (bulk)",
    price: (4, 200_000_000),
    stock: 1_000_000,
};

/// Every seeded product.
pub const PRODUCTS: [SeedProduct; 3] = [MUG, LAMP, TEA];

/// A seeded product as the mesh knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seeded {
    /// What was seeded.
    pub seed: SeedProduct,
    /// Catalog's product.
    pub product: Product,
    /// Inventory's stock after the top-up.
    pub stock: Stock,
}

/// Creates (or finds) every product of [`PRODUCTS`] and tops up its stock.
pub async fn seed(state: &MeshState) -> Result<Vec<Seeded>> {
    let mut catalog = CatalogServiceClient::new(state.channel("catalog")?);
    let mut inventory = InventoryServiceClient::new(state.channel("inventory")?);
    let mut seeded = Vec::with_capacity(PRODUCTS.len());
    for seed in PRODUCTS {
        let product = ensure_product(&mut catalog, seed).await?;
        let stock = top_up(&mut inventory, seed, &product.product_id).await?;
        seeded.push(Seeded {
            seed,
            product,
            stock,
        });
    }
    Ok(seeded)
}

/// The product with `seed`'s SKU: created with a key derived from the SKU, or found by it.
async fn ensure_product(
    catalog: &mut CatalogServiceClient<MeshChannel>,
    seed: SeedProduct,
) -> Result<Product> {
    let created = fixture::kitchen_product(
        catalog,
        seed.sku.to_owned(),
        seed.name.to_owned(),
        "Demo data seeded by meshctl up.",
        seed.price,
    )
    .await;
    match created {
        Ok(product) => Ok(product),
        // Created by someone else or with other details: the SKU is what identifies it.
        Err(MeshError::Rpc { status, .. })
            if matches!(
                status.code(),
                tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition
            ) =>
        {
            find_by_sku(catalog, seed.sku).await
        }
        Err(err) => Err(err),
    }
}

/// Pages through catalog's kitchen products for `sku`.
async fn find_by_sku(
    catalog: &mut CatalogServiceClient<MeshChannel>,
    sku: &str,
) -> Result<Product> {
    let mut page_token = String::new();
    loop {
        let page = catalog
            .list_products(ListProductsRequest {
                page_size: 100,
                page_token,
                category: "kitchen".into(),
            })
            .await
            .map_err(|s| MeshError::rpc("CatalogService/ListProducts", s))?
            .into_inner();
        if let Some(product) = page.products.into_iter().find(|p| p.sku == sku) {
            return Ok(product);
        }
        if page.next_page_token.is_empty() {
            return Err(MeshError::Usage(format!(
                "catalog refuses to create {sku} yet lists no product with that SKU"
            )));
        }
        page_token = page.next_page_token;
    }
}

/// Tops the product's available stock up to `seed.stock`.
async fn top_up(
    inventory: &mut InventoryServiceClient<MeshChannel>,
    seed: SeedProduct,
    product_id: &str,
) -> Result<Stock> {
    let current = match inventory
        .get_stock(GetStockRequest {
            product_id: product_id.to_owned(),
        })
        .await
    {
        Ok(response) => response.into_inner().stock.unwrap_or_default(),
        // No stock row yet: the first adjustment creates it.
        Err(status) if status.code() == tonic::Code::NotFound => Stock::default(),
        Err(status) => return Err(MeshError::rpc("InventoryService/GetStock", status)),
    };
    let Some(adjustment) = top_up_request(seed, product_id, &current) else {
        return Ok(current);
    };
    let adjusted = inventory
        .adjust_stock(adjustment)
        .await
        .map_err(|s| MeshError::rpc("InventoryService/AdjustStock", s))?
        .into_inner();
    Ok(adjusted.stock.unwrap_or_default())
}

/// The adjustment that brings `current` up to `seed.stock`, if it is below.
fn top_up_request(
    seed: SeedProduct,
    product_id: &str,
    current: &Stock,
) -> Option<AdjustStockRequest> {
    let delta = seed.stock - current.available;
    (delta > 0).then(|| AdjustStockRequest {
        product_id: product_id.to_owned(),
        delta,
        reason: "meshctl up: demo stock".into(),
        // The same state gives the same key: a retry is applied once.
        idempotency_key: format!(
            "meshctl-seed-{}-from-{}-{}-to-{}",
            seed.sku.to_lowercase(),
            current.on_hand,
            current.available,
            seed.stock
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tops_up_only_what_is_missing_with_a_key_naming_the_start() {
        let empty = Stock::default();
        let first = top_up_request(MUG, "p", &empty).unwrap();
        assert_eq!(first.delta, 100);
        assert_eq!(
            first.idempotency_key,
            "meshctl-seed-mesh-mug-from-0-0-to-100"
        );
        let sold = Stock {
            on_hand: 97,
            available: 95,
            ..Stock::default()
        };
        let again = top_up_request(MUG, "p", &sold).unwrap();
        assert_eq!(again.delta, 5);
        assert_ne!(again.idempotency_key, first.idempotency_key);
        let full = Stock {
            on_hand: 100,
            available: 100,
            ..Stock::default()
        };
        assert_eq!(top_up_request(MUG, "p", &full), None);
    }

    #[test]
    fn the_lamp_is_scarce_and_the_tea_plentiful() {
        // An order may ask for up to 1000: enough to exceed the lamp's stock.
        const { assert!(LAMP.stock < 1000) };
        const { assert!(TEA.stock >= 100_000) };
        let skus: std::collections::HashSet<_> = PRODUCTS.iter().map(|p| p.sku).collect();
        assert_eq!(skus.len(), PRODUCTS.len());
    }
}
