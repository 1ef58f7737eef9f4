//! Events identity publishes (`proto/shop/identity/v1/events.proto`).

/// Subject of `shop.identity.v1.UserRegistered`.
pub const USER_REGISTERED: &str = "shop.identity.v1.user_registered";
