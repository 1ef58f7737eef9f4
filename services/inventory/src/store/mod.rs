//! Inventory's PostgreSQL store. The only module that speaks SQL.
//!
//! Locking discipline, which is what keeps concurrent calls from overselling or deadlocking:
//! a transaction first locks the one row that names the operation (the reservation, or the
//! adjustment's key by inserting it), then the stock rows it changes, always with
//! `ORDER BY product_id FOR NO KEY UPDATE`. Nothing ever locks a stock row and then a
//! reservation, and every set of stock rows is taken in the same order, so no wait cycle can
//! form. The schema's CHECK constraints hold the counts together whatever happens here.

mod reservations;
mod snapshot;

pub use reservations::Finish;

use std::collections::HashMap;

use shop_events::EventEnvelope;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::{self, Stock},
    error::InventoryError,
    events,
};

const STOCK_COLUMNS: &str = "product_id, on_hand, available, reserved, committed, updated_at";

#[derive(sqlx::FromRow)]
struct StockRow {
    product_id: Uuid,
    on_hand: i64,
    available: i64,
    reserved: i64,
    committed: i64,
    updated_at: OffsetDateTime,
}

impl From<StockRow> for Stock {
    fn from(row: StockRow) -> Self {
        Self {
            product_id: row.product_id,
            on_hand: row.on_hand,
            available: row.available,
            reserved: row.reserved,
            committed: row.committed,
            updated_at: Some(row.updated_at),
        }
    }
}

#[derive(sqlx::FromRow)]
struct AdjustmentRow {
    product_id: Uuid,
    delta: i64,
    reason: String,
    on_hand: i64,
    available: i64,
    reserved: i64,
    committed: i64,
    stock_updated_at: OffsetDateTime,
}

/// A validated AdjustStock request.
#[derive(Debug, Clone)]
pub struct Adjustment {
    pub product_id: Uuid,
    pub delta: i64,
    pub reason: String,
    pub key: String,
}

impl AdjustmentRow {
    /// The first call's answer if `request` is the same adjustment, else the key is reused.
    fn answer(self, request: &Adjustment) -> Result<Stock, InventoryError> {
        if self.product_id != request.product_id
            || self.delta != request.delta
            || self.reason != request.reason
        {
            return Err(InventoryError::KeyReused(request.key.clone()));
        }
        Ok(Stock {
            product_id: self.product_id,
            on_hand: self.on_hand,
            available: self.available,
            reserved: self.reserved,
            committed: self.committed,
            updated_at: Some(self.stock_updated_at),
        })
    }
}

/// Stock and reservations in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgInventoryStore {
    pool: PgPool,
    /// LowStock fires when available units cross down to this.
    low_stock_threshold: i64,
}

impl PgInventoryStore {
    pub fn new(pool: PgPool, low_stock_threshold: i64) -> Self {
        Self {
            pool,
            low_stock_threshold,
        }
    }

    /// The stock of `product_id`; zeros for a product never stocked.
    #[tracing::instrument(skip_all, fields(%product_id))]
    pub async fn get_stock(&self, product_id: Uuid) -> Result<Stock, InventoryError> {
        let row = sqlx::query_as::<_, StockRow>(&format!(
            "SELECT {STOCK_COLUMNS} FROM stock WHERE product_id = $1"
        ))
        .bind(product_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or_else(|| Stock::none(product_id), Into::into))
    }

    /// The stock of each of `ids`, in their order, in one query.
    #[tracing::instrument(skip_all, fields(count = ids.len()))]
    pub async fn batch_get_stock(&self, ids: &[Uuid]) -> Result<Vec<Stock>, InventoryError> {
        let mut found: HashMap<Uuid, Stock> = sqlx::query_as::<_, StockRow>(&format!(
            "SELECT {STOCK_COLUMNS} FROM stock WHERE product_id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| (row.product_id, row.into()))
        .collect();
        Ok(ids
            .iter()
            .map(|id| found.remove(id).unwrap_or_else(|| Stock::none(*id)))
            .collect())
    }

    /// Applies `adjustment` once per key: a retry returns the stock level the first call left.
    #[tracing::instrument(skip_all, fields(product_id = %adjustment.product_id, delta = adjustment.delta))]
    pub async fn adjust(&self, adjustment: &Adjustment) -> Result<Stock, InventoryError> {
        if let Some(first) = self.adjustment(&adjustment.key).await? {
            return first.answer(adjustment);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO stock (product_id, on_hand, available, reserved, committed) \
             VALUES ($1, 0, 0, 0, 0) ON CONFLICT (product_id) DO NOTHING",
        )
        .bind(adjustment.product_id)
        .execute(&mut *tx)
        .await?;
        let before = lock_stock(&mut tx, &[adjustment.product_id]).await?;
        let Locked { available, on_hand } = before
            .get(&adjustment.product_id)
            .copied()
            .ok_or_else(|| InventoryError::Corrupt("stock row vanished under lock".into()))?;
        if on_hand.checked_add(adjustment.delta).is_none() {
            tx.rollback().await?;
            return Err(InventoryError::invalid(
                "delta",
                "would overflow the stock count",
            ));
        }
        if available.saturating_add(adjustment.delta) < 0 {
            tx.rollback().await?;
            return Err(InventoryError::BelowHeld {
                product_id: adjustment.product_id,
                delta: adjustment.delta,
                available,
            });
        }
        let after: Stock = sqlx::query_as::<_, StockRow>(&format!(
            "UPDATE stock SET on_hand = on_hand + $2, available = available + $2, \
             updated_at = now() WHERE product_id = $1 RETURNING {STOCK_COLUMNS}"
        ))
        .bind(adjustment.product_id)
        .bind(adjustment.delta)
        .fetch_one(&mut *tx)
        .await?
        .into();
        if !record_adjustment(&mut tx, adjustment, &after).await? {
            // A concurrent call with the same key committed first: its answer stands and this
            // transaction's change is rolled back.
            tx.rollback().await?;
            let first = self.adjustment(&adjustment.key).await?.ok_or_else(|| {
                InventoryError::Corrupt("adjustment key conflicted, then vanished".into())
            })?;
            return first.answer(adjustment);
        }
        self.low_stock(&mut tx, adjustment.product_id, available, after.available)
            .await?;
        tx.commit().await?;
        Ok(after)
    }

    async fn adjustment(&self, key: &str) -> Result<Option<AdjustmentRow>, InventoryError> {
        Ok(sqlx::query_as::<_, AdjustmentRow>(
            "SELECT product_id, delta, reason, on_hand, available, reserved, committed, \
             stock_updated_at FROM stock_adjustments WHERE idempotency_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Writes LowStock to the outbox if `product_id` crossed the threshold going down.
    async fn low_stock(
        &self,
        conn: &mut PgConnection,
        product_id: Uuid,
        before: i64,
        after: i64,
    ) -> Result<(), InventoryError> {
        if domain::crossed_low(before, after, self.low_stock_threshold) {
            let event = events::low_stock(product_id, after, self.low_stock_threshold);
            shop_outbox::add(conn, &EventEnvelope::new(event)).await?;
        }
        Ok(())
    }
}

/// A stock row's counts as locked, before the change.
#[derive(Debug, Clone, Copy)]
struct Locked {
    available: i64,
    on_hand: i64,
}

/// Locks the stock rows of `ids` in product id order (the order of the locking discipline
/// above: `ORDER BY` sits below the row locks in the plan, so rows are locked as sorted).
async fn lock_stock(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Locked>, InventoryError> {
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT product_id, available, on_hand FROM stock WHERE product_id = ANY($1) \
         ORDER BY product_id FOR NO KEY UPDATE",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, available, on_hand)| (id, Locked { available, on_hand }))
        .collect())
}

/// Records the adjustment under its key; `false` if the key was taken meanwhile.
async fn record_adjustment(
    conn: &mut PgConnection,
    adjustment: &Adjustment,
    after: &Stock,
) -> Result<bool, InventoryError> {
    let inserted = sqlx::query(
        "INSERT INTO stock_adjustments (idempotency_key, product_id, delta, reason, on_hand, \
         available, reserved, committed, stock_updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(&adjustment.key)
    .bind(adjustment.product_id)
    .bind(adjustment.delta)
    .bind(&adjustment.reason)
    .bind(after.on_hand)
    .bind(after.available)
    .bind(after.reserved)
    .bind(after.committed)
    .bind(after.updated_at)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}
