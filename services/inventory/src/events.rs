//! Events inventory publishes (`proto/shop/inventory/v1/events.proto`); `shop_runtime::outbox`
//! relays them from the outbox to JetStream.

use shop_proto::inventory::{LowStock, StockLine, StockReleased, StockReserved};
use shop_runtime::convert::timestamp;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Line, Reservation};

/// Subject of `shop.inventory.v1.StockReserved`.
pub const STOCK_RESERVED: &str = "shop.inventory.v1.stock_reserved";
/// Subject of `shop.inventory.v1.StockReleased`.
pub const STOCK_RELEASED: &str = "shop.inventory.v1.stock_released";
/// Subject of `shop.inventory.v1.LowStock`.
pub const LOW_STOCK: &str = "shop.inventory.v1.low_stock";

/// `StockReleased.reason` when the sweeper releases an expired reservation.
pub const REASON_EXPIRED: &str = "expired";

/// A line as it travels in events and responses.
pub(crate) fn line_to_pb(line: &Line) -> StockLine {
    StockLine {
        product_id: line.product_id.to_string(),
        // Lines are at most 10000 units (the contract), so this never saturates.
        quantity: i32::try_from(line.quantity).unwrap_or(i32::MAX),
    }
}

/// `StockReserved` for a reservation just made.
pub(crate) fn stock_reserved(reservation: &Reservation) -> StockReserved {
    StockReserved {
        reservation_id: reservation.id.to_string(),
        order_id: reservation.order_id.to_string(),
        lines: reservation.lines.iter().map(line_to_pb).collect(),
        occurred_at: Some(timestamp(reservation.created_at)),
    }
}

/// `StockReleased` for a reservation just released.
pub(crate) fn stock_released(reservation: &Reservation, reason: &str) -> StockReleased {
    StockReleased {
        reservation_id: reservation.id.to_string(),
        order_id: reservation.order_id.to_string(),
        lines: reservation.lines.iter().map(line_to_pb).collect(),
        reason: reason.to_owned(),
        occurred_at: Some(timestamp(reservation.updated_at)),
    }
}

/// `LowStock` for a product whose available units just fell to `available`.
pub(crate) fn low_stock(product_id: Uuid, available: i64, threshold: i64) -> LowStock {
    LowStock {
        product_id: product_id.to_string(),
        available,
        threshold,
        occurred_at: Some(timestamp(OffsetDateTime::now_utc())),
    }
}

#[cfg(test)]
mod tests {
    use shop_events::subject_for;
    use shop_proto::inventory::{LowStock, StockReleased, StockReserved};

    use super::*;

    #[test]
    fn subjects_are_the_envelope_defaults() {
        assert_eq!(subject_for::<StockReserved>(), STOCK_RESERVED);
        assert_eq!(subject_for::<StockReleased>(), STOCK_RELEASED);
        assert_eq!(subject_for::<LowStock>(), LOW_STOCK);
    }
}
