//! Events the catalog publishes (`proto/shop/catalog/v1/events.proto`); `shop_runtime::outbox`
//! relays them from the outbox to JetStream.

/// Subject of `shop.catalog.v1.ProductPriceChanged`.
pub const PRODUCT_PRICE_CHANGED: &str = "shop.catalog.v1.product_price_changed";

/// Name of the catalog's stream.
pub const STREAM: &str = "SHOP_CATALOG";
