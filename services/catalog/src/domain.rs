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

/// Where a page of products starts, decoded from a page token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart {
    First,
    After(Uuid),
}
