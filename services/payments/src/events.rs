//! Events payments publishes (`proto/shop/payments/v1/events.proto`); `shop_runtime::outbox`
//! relays them from the outbox to JetStream.

/// Subject of `shop.payments.v1.PaymentAuthorized`.
pub const PAYMENT_AUTHORIZED: &str = "shop.payments.v1.payment_authorized";
/// Subject of `shop.payments.v1.PaymentCaptured`.
pub const PAYMENT_CAPTURED: &str = "shop.payments.v1.payment_captured";
/// Subject of `shop.payments.v1.PaymentRefunded`.
pub const PAYMENT_REFUNDED: &str = "shop.payments.v1.payment_refunded";
/// Subject of `shop.payments.v1.PaymentVoided`.
pub const PAYMENT_VOIDED: &str = "shop.payments.v1.payment_voided";
