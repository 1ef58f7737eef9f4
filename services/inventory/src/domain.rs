//! Stock and reservations as the service reasons about them, and the rules that need no I/O:
//! which lines may form a reservation, which lines are short, when LowStock fires.

use std::collections::HashMap;

use time::OffsetDateTime;
use uuid::Uuid;

/// The stock level of one product. `updated_at` is `None` for a product never stocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock {
    pub product_id: Uuid,
    pub on_hand: i64,
    pub available: i64,
    pub reserved: i64,
    pub committed: i64,
    pub updated_at: Option<OffsetDateTime>,
}

impl Stock {
    /// A product the service has never held: all zeros.
    pub fn none(product_id: Uuid) -> Self {
        Self {
            product_id,
            on_hand: 0,
            available: 0,
            reserved: 0,
            committed: 0,
            updated_at: None,
        }
    }
}

/// A quantity of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Line {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// Where a reservation is in its life. Only `Reserved` moves, to one of the two others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    Reserved,
    Released,
    Committed,
}

impl ReservationStatus {
    /// The value stored in `reservations.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Released => "released",
            Self::Committed => "committed",
        }
    }

    /// Reads a stored status; the schema's CHECK admits no other value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "reserved" => Some(Self::Reserved),
            "released" => Some(Self::Released),
            "committed" => Some(Self::Committed),
            _ => None,
        }
    }
}

/// A reservation with its lines (sorted by product id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: Uuid,
    pub order_id: Uuid,
    pub status: ReservationStatus,
    pub lines: Vec<Line>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// A validated Reserve request. `lines` keep the request's order, so errors can name
/// `lines[i]`; [`NewReservation::sorted_lines`] gives the order rows are locked in.
#[derive(Debug, Clone)]
pub struct NewReservation {
    pub id: Uuid,
    pub order_id: Uuid,
    pub lines: Vec<Line>,
}

impl NewReservation {
    /// Builds the request, refusing a product on two lines (the second line is named).
    pub fn new(id: Uuid, order_id: Uuid, lines: Vec<Line>) -> Result<Self, DuplicateLine> {
        let mut first_seen: HashMap<Uuid, usize> = HashMap::with_capacity(lines.len());
        for (index, line) in lines.iter().enumerate() {
            if let Some(&first) = first_seen.get(&line.product_id) {
                return Err(DuplicateLine { index, first });
            }
            first_seen.insert(line.product_id, index);
        }
        Ok(Self {
            id,
            order_id,
            lines,
        })
    }

    /// The lines by product id: the one order in which every transaction locks stock rows, so
    /// two multi-line reservations can wait for each other but never deadlock.
    pub fn sorted_lines(&self) -> Vec<Line> {
        let mut lines = self.lines.clone();
        lines.sort_unstable();
        lines
    }

    /// Whether `existing` is this same request made before (a retry), not another one that
    /// reuses the id.
    pub fn is_retry_of(&self, existing: &Reservation) -> bool {
        self.order_id == existing.order_id && self.sorted_lines() == existing.lines
    }
}

/// Line `index` names the same product as line `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateLine {
    pub index: usize,
    pub first: usize,
}

/// A line that cannot be held: `available` is `None` for a product never stocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub index: usize,
    pub product_id: Uuid,
    pub requested: i64,
    pub available: Option<i64>,
}

/// Every line of `lines` (request order) that `available` (per product) cannot cover.
pub fn shortfalls(lines: &[Line], available: &HashMap<Uuid, i64>) -> Vec<Shortfall> {
    lines
        .iter()
        .enumerate()
        .filter_map(|(index, line)| {
            let have = available.get(&line.product_id).copied();
            (have.unwrap_or(0) < line.quantity).then_some(Shortfall {
                index,
                product_id: line.product_id,
                requested: line.quantity,
                available: have,
            })
        })
        .collect()
}

/// LowStock fires when available stock goes from above `threshold` to at or below it: once per
/// crossing, not on every change while it stays low.
pub fn crossed_low(before: i64, after: i64, threshold: i64) -> bool {
    before > threshold && after <= threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u128, quantity: i64) -> Line {
        Line {
            product_id: Uuid::from_u128(n),
            quantity,
        }
    }

    #[test]
    fn a_product_on_two_lines_is_refused_naming_the_second() {
        let err = NewReservation::new(
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            vec![line(5, 1), line(6, 1), line(5, 2)],
        )
        .unwrap_err();
        assert_eq!(err, DuplicateLine { index: 2, first: 0 });
    }

    #[test]
    fn a_retry_matches_whatever_the_line_order() {
        let new = NewReservation::new(
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            vec![line(9, 1), line(3, 4)],
        )
        .unwrap();
        let mut existing = Reservation {
            id: new.id,
            order_id: new.order_id,
            status: ReservationStatus::Committed,
            lines: vec![line(3, 4), line(9, 1)],
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            expires_at: OffsetDateTime::UNIX_EPOCH,
        };
        assert!(new.is_retry_of(&existing));
        existing.lines[0].quantity = 5;
        assert!(!new.is_retry_of(&existing));
        existing.lines[0].quantity = 4;
        existing.order_id = Uuid::from_u128(7);
        assert!(!new.is_retry_of(&existing));
    }

    #[test]
    fn shortfalls_name_every_short_line_in_request_order() {
        let available = HashMap::from([(Uuid::from_u128(1), 5), (Uuid::from_u128(2), 0)]);
        let short = shortfalls(&[line(2, 1), line(1, 5), line(3, 1)], &available);
        let indexes: Vec<_> = short.iter().map(|s| (s.index, s.available)).collect();
        assert_eq!(indexes, vec![(0, Some(0)), (2, None)]);
    }

    #[test]
    fn low_stock_fires_on_the_crossing_only() {
        assert!(crossed_low(11, 10, 10));
        assert!(crossed_low(50, 0, 10));
        assert!(!crossed_low(10, 9, 10), "already low");
        assert!(!crossed_low(5, 20, 10), "rising");
        assert!(!crossed_low(20, 11, 10), "still above");
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            ReservationStatus::Reserved,
            ReservationStatus::Released,
            ReservationStatus::Committed,
        ] {
            assert_eq!(ReservationStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(ReservationStatus::parse("lost"), None);
    }
}
