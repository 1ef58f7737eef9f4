//! Events the catalog publishes (`proto/shop/catalog/v1/events.proto`).

/// Subject of `shop.catalog.v1.ProductPriceChanged`.
pub const PRODUCT_PRICE_CHANGED: &str = "shop.catalog.v1.product_price_changed";
