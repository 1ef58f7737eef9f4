//! Stock conservation within inventory's snapshot: each product's counts add up, none is
//! negative, and `reserved`/`committed` are exactly what its reservations hold.

use std::collections::{BTreeMap, BTreeSet};

use super::{Kind, Violation};
use crate::types::{InventoryState, ReservationStatus};

/// Units held per product by RESERVED and by COMMITTED reservations.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    reserved: i64,
    committed: i64,
}

pub(super) fn stock_conserved(inventory: &InventoryState, found: &mut Vec<Violation>) {
    let held = held_by_reservations(inventory);
    let stocked: BTreeSet<&str> = inventory
        .stock
        .iter()
        .map(|s| s.product_id.as_str())
        .collect();
    for row in &inventory.stock {
        let expected = held
            .get(row.product_id.as_str())
            .copied()
            .unwrap_or_default();
        let mut wrong = Vec::new();
        let sum = row
            .available
            .saturating_add(row.reserved)
            .saturating_add(row.committed);
        if row.on_hand != sum {
            wrong.push(format!(
                "on_hand {} <> available {} + reserved {} + committed {}",
                row.on_hand, row.available, row.reserved, row.committed
            ));
        }
        if row
            .on_hand
            .min(row.available)
            .min(row.reserved)
            .min(row.committed)
            < 0
        {
            wrong.push("a negative count".to_owned());
        }
        if row.reserved != expected.reserved {
            wrong.push(format!(
                "reserved {}, RESERVED reservations hold {}",
                row.reserved, expected.reserved
            ));
        }
        if row.committed != expected.committed {
            wrong.push(format!(
                "committed {}, COMMITTED reservations hold {}",
                row.committed, expected.committed
            ));
        }
        if !wrong.is_empty() {
            found.push(Violation::new(
                Kind::StockNotConserved,
                format!("product {}", row.product_id),
                wrong.join("; "),
            ));
        }
    }
    let unstocked = held
        .iter()
        .filter(|(p, h)| !stocked.contains(*p) && (h.reserved != 0 || h.committed != 0));
    for (product, units) in unstocked {
        found.push(Violation::new(
            Kind::StockNotConserved,
            format!("product {product}"),
            format!(
                "no stock row, reservations hold {} reserved and {} committed",
                units.reserved, units.committed
            ),
        ));
    }
}

fn held_by_reservations(inventory: &InventoryState) -> BTreeMap<&str, Held> {
    let mut held: BTreeMap<&str, Held> = BTreeMap::new();
    for reservation in &inventory.reservations {
        for line in &reservation.lines {
            let units = held.entry(line.product_id.as_str()).or_default();
            match reservation.status {
                ReservationStatus::Reserved => {
                    units.reserved = units.reserved.saturating_add(line.quantity);
                }
                ReservationStatus::Committed => {
                    units.committed = units.committed.saturating_add(line.quantity);
                }
                ReservationStatus::Released => {}
            }
        }
    }
    held
}
