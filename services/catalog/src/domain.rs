//! Products and money as the catalog reasons about them. No I/O here.

use time::OffsetDateTime;
use uuid::Uuid;

/// An amount in one currency: `units` whole units plus `nanos` billionths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub units: i64,
    pub nanos: i32,
    pub currency_code: String,
}

/// A product as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price: Money,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// What CreateProduct asks for, already checked against the contract's rules.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price: Money,
    pub idempotency_key: Option<String>,
}

impl NewProduct {
    /// What the request asked for, every field but the key, in an unambiguous byte form
    /// (each field length-prefixed): two requests with one key must match on it.
    pub fn fingerprint(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for field in [
            self.sku.as_bytes(),
            self.name.as_bytes(),
            self.description.as_bytes(),
            self.category.as_bytes(),
            self.price.currency_code.as_bytes(),
        ] {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field);
        }
        out.extend_from_slice(&self.price.units.to_be_bytes());
        out.extend_from_slice(&self.price.nanos.to_be_bytes());
        out
    }
}

/// Where a page of products starts, decoded from a page token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart {
    First,
    After(Uuid),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(sku: &str, name: &str) -> NewProduct {
        NewProduct {
            sku: sku.into(),
            name: name.into(),
            description: String::new(),
            category: "misc".into(),
            price: Money {
                units: 1,
                nanos: 0,
                currency_code: "EUR".into(),
            },
            idempotency_key: Some("k".into()),
        }
    }

    #[test]
    fn fingerprint_tells_fields_apart_but_ignores_the_key() {
        assert_ne!(
            product("ab", "c").fingerprint(),
            product("a", "bc").fingerprint()
        );
        let mut other_key = product("a", "b");
        other_key.idempotency_key = None;
        assert_eq!(other_key.fingerprint(), product("a", "b").fingerprint());
        let mut cheaper = product("a", "b");
        cheaper.price.nanos = 1;
        assert_ne!(cheaper.fingerprint(), product("a", "b").fingerprint());
    }
}
