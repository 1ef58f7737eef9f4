//! Shipments as the service reasons about them, and the rules that need no I/O: the life of a
//! shipment, the price of a delivery (zones, parcels, currencies), tracking numbers.
//!
//! Pricing is deterministic: the same lines to the same country in the same currency always
//! cost the same. A delivery is priced in euro cents from the destination's zone (parcels of
//! up to [`UNITS_PER_PARCEL`] units, plus a charge per unit), then converted at a fixed rate
//! and rounded up to the currency's minor unit, so a quote never undercharges.

use time::OffsetDateTime;
use uuid::Uuid;

/// Where a shipment is in its life. SCHEDULED moves to IN_TRANSIT (pickup) or CANCELLED;
/// IN_TRANSIT moves to DELIVERED. DELIVERED and CANCELLED are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentStatus {
    Scheduled,
    InTransit,
    Delivered,
    Cancelled,
}

impl ShipmentStatus {
    /// The value stored in `shipments.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::InTransit => "in_transit",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    /// Reads a stored status; the schema's CHECK admits no other value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "scheduled" => Some(Self::Scheduled),
            "in_transit" => Some(Self::InTransit),
            "delivered" => Some(Self::Delivered),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// The proto enum name without its prefix (`SCHEDULED`, `IN_TRANSIT`, ...), as
    /// `/admin/state` and error details show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scheduled => "SCHEDULED",
            Self::InTransit => "IN_TRANSIT",
            Self::Delivered => "DELIVERED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// A quantity of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Line {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// Where a parcel goes (`shop.common.v1.PostalAddress`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    pub recipient_name: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country_code: String,
}

/// An amount in integer minor units of a currency the shop trades in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub minor: i64,
    pub currency: &'static Currency,
}

impl Cost {
    /// The amount as whole units and billionths (`shop.common.v1.Money`).
    pub fn units_and_nanos(&self) -> (i64, i32) {
        let scale = 10_i64.pow(self.currency.exponent);
        let units = self.minor / scale;
        let fraction = self.minor % scale;
        // fraction < 100 and the factor is at most 10^9 / 1: the product is below 10^9.
        let nanos = fraction * 10_i64.pow(9 - self.currency.exponent);
        (units, i32::try_from(nanos).unwrap_or(0))
    }
}

/// A currency the shop trades in: its ISO 4217 code, the decimals of its minor unit, and the
/// fixed rate quotes convert euro prices at (units of it per euro, in millionths).
#[derive(Debug, PartialEq, Eq)]
pub struct Currency {
    pub code: &'static str,
    pub exponent: u32,
    pub per_euro_micros: i64,
}

const fn currency(code: &'static str, exponent: u32, per_euro_micros: i64) -> Currency {
    Currency {
        code,
        exponent,
        per_euro_micros,
    }
}

/// The shop's default currency, used when a quote names none.
pub const DEFAULT_CURRENCY: &str = "EUR";

/// The currencies of `shop.common.v1.Money` (the ones the shop trades in) with the fixed
/// rates shipping quotes at. The rates are the simulation's, not a market feed: they keep
/// quotes deterministic.
pub static CURRENCIES: [Currency; 34] = [
    currency("EUR", 2, 1_000_000),
    currency("USD", 2, 1_080_000),
    currency("GBP", 2, 860_000),
    currency("JPY", 0, 162_000_000),
    currency("CHF", 2, 950_000),
    currency("CAD", 2, 1_470_000),
    currency("AUD", 2, 1_650_000),
    currency("NZD", 2, 1_800_000),
    currency("SEK", 2, 11_500_000),
    currency("NOK", 2, 11_700_000),
    currency("DKK", 2, 7_460_000),
    currency("ISK", 0, 150_000_000),
    currency("PLN", 2, 4_300_000),
    currency("CZK", 2, 25_200_000),
    currency("HUF", 2, 395_000_000),
    currency("RON", 2, 4_970_000),
    currency("BGN", 2, 1_956_000),
    currency("TRY", 2, 35_000_000),
    currency("CNY", 2, 7_800_000),
    currency("HKD", 2, 8_400_000),
    currency("SGD", 2, 1_450_000),
    currency("KRW", 0, 1_470_000_000),
    currency("TWD", 2, 35_000_000),
    currency("INR", 2, 90_000_000),
    currency("THB", 2, 38_000_000),
    currency("MYR", 2, 4_900_000),
    currency("IDR", 2, 17_300_000_000),
    currency("PHP", 2, 62_000_000),
    currency("BRL", 2, 6_000_000),
    currency("MXN", 2, 19_500_000),
    currency("ZAR", 2, 20_000_000),
    currency("ILS", 2, 4_000_000),
    currency("AED", 2, 3_970_000),
    currency("SAR", 2, 4_050_000),
];

/// The currency with ISO code `code`, if the shop trades in it.
pub fn traded_currency(code: &str) -> Option<&'static Currency> {
    CURRENCIES.iter().find(|c| c.code == code)
}

/// The shop's default currency.
pub fn default_currency() -> &'static Currency {
    traded_currency(DEFAULT_CURRENCY).unwrap_or(&CURRENCIES[0])
}

/// How far a parcel travels from the warehouse (in Germany).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Domestic,
    Europe,
    World,
}

/// Country of the warehouse.
pub const HOME_COUNTRY: &str = "DE";

/// European countries (ISO 3166-1 alpha-2) reached by road: the Europe zone.
const EUROPE: [&str; 36] = [
    "AT", "BE", "BG", "CH", "CY", "CZ", "DK", "EE", "ES", "FI", "FR", "GB", "GR", "HR", "HU", "IE",
    "IS", "IT", "LI", "LT", "LU", "LV", "MC", "MT", "NL", "NO", "PL", "PT", "RO", "SE", "SI", "SK",
    "SM", "AD", "VA", "RS",
];

/// Units that fit one parcel.
pub const UNITS_PER_PARCEL: i64 = 20;

impl Zone {
    /// The zone of `country_code` (upper-case alpha-2).
    pub fn of(country_code: &str) -> Self {
        if country_code == HOME_COUNTRY {
            Self::Domestic
        } else if EUROPE.contains(&country_code) {
            Self::Europe
        } else {
            Self::World
        }
    }

    /// The carrier that serves the zone.
    pub fn carrier(self) -> &'static str {
        match self {
            Self::Domestic => "DHL",
            Self::Europe => "DPD",
            Self::World => "UPS",
        }
    }

    /// Days the carrier takes from scheduling to delivery.
    pub fn delivery_days(self) -> i32 {
        match self {
            Self::Domestic => 2,
            Self::Europe => 4,
            Self::World => 7,
        }
    }

    /// Euro cents per parcel and per unit.
    fn rates(self) -> (i64, i64) {
        match self {
            Self::Domestic => (490, 10),
            Self::Europe => (990, 25),
            Self::World => (1990, 60),
        }
    }
}

/// The price of a delivery and who carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub cost: Cost,
    pub carrier: &'static str,
    pub delivery_days: i32,
}

/// Prices `lines` to `country_code` in `currency`. Lines of the contract hold at most 1000
/// units each and a message at most a few thousand lines, so no sum here can overflow; it
/// saturates rather than wrap if it ever did.
pub fn quote(lines: &[Line], country_code: &str, currency: &'static Currency) -> Quote {
    let zone = Zone::of(country_code);
    let units = lines
        .iter()
        .fold(0_i64, |sum, line| sum.saturating_add(line.quantity.max(0)));
    let parcels = ((units + UNITS_PER_PARCEL - 1) / UNITS_PER_PARCEL).max(1);
    let (per_parcel, per_unit) = zone.rates();
    let euro_cents = parcels
        .saturating_mul(per_parcel)
        .saturating_add(units.saturating_mul(per_unit));
    Quote {
        cost: Cost {
            minor: convert(euro_cents, currency),
            currency,
        },
        carrier: zone.carrier(),
        delivery_days: zone.delivery_days(),
    }
}

/// `euro_cents` in minor units of `currency` at its fixed rate, rounded up.
fn convert(euro_cents: i64, currency: &Currency) -> i64 {
    let numerator = i128::from(euro_cents)
        * i128::from(currency.per_euro_micros)
        * i128::from(10_i64.pow(currency.exponent));
    let denominator = 100 * 1_000_000_i128;
    let minor = (numerator + denominator - 1) / denominator;
    i64::try_from(minor).unwrap_or(i64::MAX)
}

/// A shipment with its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    pub status: ShipmentStatus,
    pub carrier: String,
    pub tracking_number: String,
    pub address: Address,
    pub lines: Vec<Line>,
    pub cost: Cost,
    pub estimated_delivery_at: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
    pub cancel_reason: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A shipment to schedule for a confirmed order, checked: ids parse, lines are positive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewShipment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    pub address: Address,
    pub lines: Vec<Line>,
    pub quote: Quote,
}

impl NewShipment {
    /// A new shipment (fresh id) of `lines` to `address`, priced in `currency` (the order's,
    /// else the default one).
    pub fn new(
        order_id: Uuid,
        customer_id: String,
        address: Address,
        lines: Vec<Line>,
        currency: &str,
    ) -> Self {
        let currency = traded_currency(currency).unwrap_or_else(default_currency);
        let quote = quote(&lines, &address.country_code, currency);
        Self {
            id: Uuid::now_v7(),
            order_id,
            customer_id,
            address,
            lines,
            quote,
        }
    }

    /// The carrier's tracking number: derived from the shipment id's random part, so it is
    /// unique as the id is.
    pub fn tracking_number(&self) -> String {
        tracking_number(self.quote.carrier, self.id)
    }
}

/// `<carrier>-<16 hex digits>` from the random tail of a UUIDv7 (its head is a timestamp).
pub fn tracking_number(carrier: &str, id: Uuid) -> String {
    let hex = id.simple().to_string().to_ascii_uppercase();
    let tail = hex.get(16..).unwrap_or(&hex);
    format!("{carrier}-{tail}")
}

/// An event that can never be applied (an id that does not parse, no lines, no address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event field {field}: {reason}")]
pub struct MalformedEvent {
    pub field: String,
    pub reason: String,
}

impl MalformedEvent {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(quantities: &[i64]) -> Vec<Line> {
        quantities
            .iter()
            .enumerate()
            .map(|(i, &quantity)| Line {
                product_id: Uuid::from_u128(i as u128 + 1),
                quantity,
            })
            .collect()
    }

    fn eur() -> &'static Currency {
        traded_currency("EUR").unwrap()
    }

    #[test]
    fn prices_follow_zone_parcels_and_units() {
        // One parcel of 3 units at home: 4.90 + 3 x 0.10.
        let home = quote(&lines(&[1, 2]), "DE", eur());
        assert_eq!(
            (home.cost.minor, home.carrier, home.delivery_days),
            (520, "DHL", 2)
        );
        // 21 units need two parcels: 2 x 9.90 + 21 x 0.25 in Europe.
        let europe = quote(&lines(&[20, 1]), "FR", eur());
        assert_eq!(europe.cost.minor, 2 * 990 + 21 * 25);
        assert_eq!(europe.carrier, "DPD");
        let world = quote(&lines(&[1]), "US", eur());
        assert_eq!((world.cost.minor, world.delivery_days), (1990 + 60, 7));
    }

    #[test]
    fn the_same_request_costs_the_same_whatever_the_line_order() {
        let a = quote(&lines(&[3, 7, 1]), "AT", eur());
        let mut reversed = lines(&[3, 7, 1]);
        reversed.reverse();
        assert_eq!(a, quote(&reversed, "AT", eur()));
    }

    #[test]
    fn conversion_rounds_up_to_the_minor_unit() {
        let jpy = traded_currency("JPY").unwrap();
        // 5.20 EUR at 162 JPY: 842.4 -> 843 yen, no fraction.
        let yen = quote(&lines(&[1, 2]), "DE", jpy);
        assert_eq!(yen.cost.minor, 843);
        assert_eq!(yen.cost.units_and_nanos(), (843, 0));
        let usd = traded_currency("USD").unwrap();
        // 5.20 EUR at 1.08: 5.616 -> 5.62 USD.
        let dollars = quote(&lines(&[1, 2]), "DE", usd);
        assert_eq!(dollars.cost.minor, 562);
        assert_eq!(dollars.cost.units_and_nanos(), (5, 620_000_000));
    }

    #[test]
    fn every_contract_currency_is_traded_once() {
        for (i, c) in CURRENCIES.iter().enumerate() {
            assert!(c.per_euro_micros > 0 && c.exponent <= 2, "{}", c.code);
            assert_eq!(traded_currency(c.code).map(|f| f.code), Some(c.code));
            assert!(
                CURRENCIES[..i].iter().all(|o| o.code != c.code),
                "{}",
                c.code
            );
        }
        assert_eq!(default_currency().code, DEFAULT_CURRENCY);
        assert!(traded_currency("XAU").is_none());
    }

    #[test]
    fn a_new_shipment_in_an_unknown_currency_is_priced_in_the_default_one() {
        let shipment = NewShipment::new(
            Uuid::from_u128(9),
            "c".into(),
            Address {
                country_code: "DE".into(),
                ..Address::default()
            },
            lines(&[1]),
            "XXX",
        );
        assert_eq!(shipment.quote.cost.currency.code, DEFAULT_CURRENCY);
        let number = shipment.tracking_number();
        assert!(number.starts_with("DHL-") && number.len() == 20, "{number}");
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            ShipmentStatus::Scheduled,
            ShipmentStatus::InTransit,
            ShipmentStatus::Delivered,
            ShipmentStatus::Cancelled,
        ] {
            assert_eq!(ShipmentStatus::parse(s.as_str()), Some(s));
            assert_eq!(s.name(), s.as_str().to_ascii_uppercase());
        }
        assert_eq!(ShipmentStatus::parse("lost"), None);
    }
}
