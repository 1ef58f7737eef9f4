//! Events identity publishes (`proto/shop/identity/v1/events.proto`); `shop_runtime::outbox`
//! relays them from the outbox to JetStream.

/// Subject of `shop.identity.v1.UserRegistered`.
pub const USER_REGISTERED: &str = "shop.identity.v1.user_registered";
