//! Every stock row and every reservation with its lines, read in one snapshot, for
//! `/admin/state`.

use std::collections::HashMap;

use uuid::Uuid;

use super::reservations::{HEAD_COLUMNS, HeadRow};
use super::{PgInventoryStore, STOCK_COLUMNS, StockRow};
use crate::{
    domain::{Line, Reservation, Stock},
    error::InventoryError,
};

/// Stock and reservations as of one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// By product id.
    pub stock: Vec<Stock>,
    /// By creation, lines by product id.
    pub reservations: Vec<Reservation>,
}

impl PgInventoryStore {
    /// Every stock row and reservation, from one REPEATABLE READ transaction so the counts and
    /// the reservations they must agree with are of the same instant.
    #[tracing::instrument(skip_all)]
    pub async fn snapshot(&self) -> Result<Snapshot, InventoryError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let stock = sqlx::query_as::<_, StockRow>(&format!(
            "SELECT {STOCK_COLUMNS} FROM stock ORDER BY product_id"
        ))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
        let heads = sqlx::query_as::<_, HeadRow>(&format!(
            "SELECT {HEAD_COLUMNS} FROM reservations ORDER BY created_at, id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let line_rows: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(
            "SELECT reservation_id, product_id, quantity FROM reservation_lines \
             ORDER BY reservation_id, product_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut lines: HashMap<Uuid, Vec<Line>> = HashMap::new();
        for (reservation_id, product_id, quantity) in line_rows {
            lines.entry(reservation_id).or_default().push(Line {
                product_id,
                quantity,
            });
        }
        let reservations = heads
            .into_iter()
            .map(|head| {
                let of_head = lines.remove(&head.id).unwrap_or_default();
                head.with_lines(of_head)
            })
            .collect::<Result<_, _>>()?;
        Ok(Snapshot {
            stock,
            reservations,
        })
    }

    /// The pool, for the outbox's figures.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }
}
