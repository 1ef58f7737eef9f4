//! Reserve, Release, Commit and the sweeper's release of expired reservations.

use std::collections::HashMap;

use shop_events::EventEnvelope;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PgInventoryStore, lock_stock};
use crate::{
    domain::{Line, NewReservation, Reservation, ReservationStatus, shortfalls},
    error::InventoryError,
    events,
};

pub(super) const HEAD_COLUMNS: &str = "id, order_id, status, created_at, updated_at, expires_at";

/// A reservation row without its lines.
#[derive(sqlx::FromRow)]
pub(super) struct HeadRow {
    pub(super) id: Uuid,
    order_id: Uuid,
    status: String,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    expires_at: OffsetDateTime,
}

impl HeadRow {
    fn status(&self) -> Result<ReservationStatus, InventoryError> {
        ReservationStatus::parse(&self.status)
            .ok_or_else(|| InventoryError::Corrupt(format!("reservation status {}", self.status)))
    }

    pub(super) fn with_lines(self, lines: Vec<Line>) -> Result<Reservation, InventoryError> {
        Ok(Reservation {
            status: self.status()?,
            id: self.id,
            order_id: self.order_id,
            lines,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
        })
    }
}

/// Where Release or Commit takes a reservation.
#[derive(Debug, Clone, Copy)]
pub enum Finish<'a> {
    Release { reason: &'a str },
    Commit,
}

impl Finish<'_> {
    fn status(self) -> ReservationStatus {
        match self {
            Self::Release { .. } => ReservationStatus::Released,
            Self::Commit => ReservationStatus::Committed,
        }
    }
}

impl PgInventoryStore {
    /// Holds every line of `new` or none, once per reservation id: a retry of the same request
    /// returns the reservation as it is now, another request under the same id is refused.
    #[tracing::instrument(skip_all, fields(reservation_id = %new.id, lines = new.lines.len()))]
    pub async fn reserve(
        &self,
        new: &NewReservation,
        ttl_secs: f64,
    ) -> Result<Reservation, InventoryError> {
        let mut tx = self.pool.begin().await?;
        // The id first: a concurrent retry waits here for this transaction, then finds its row.
        let head = sqlx::query_as::<_, HeadRow>(&format!(
            "INSERT INTO reservations (id, order_id, status, expires_at) \
             VALUES ($1, $2, 'reserved', now() + make_interval(secs => $3)) \
             ON CONFLICT (id) DO NOTHING RETURNING {HEAD_COLUMNS}"
        ))
        .bind(new.id)
        .bind(new.order_id)
        .bind(ttl_secs)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(head) = head else {
            tx.rollback().await?;
            let existing = self
                .reservation(new.id)
                .await?
                .ok_or_else(|| InventoryError::Corrupt("reservation id conflicted".into()))?;
            return if new.is_retry_of(&existing) {
                Ok(existing)
            } else {
                Err(InventoryError::ReservationConflict(new.id))
            };
        };
        let lines = new.sorted_lines();
        let (ids, quantities) = columns(&lines);
        // A sold-out hot product refuses without queueing for its row lock: refusing on a
        // committed state read now is as correct as refusing after the lock, and it keeps the
        // lock queue to the calls that can succeed.
        let seen = available(&mut tx, &ids).await?;
        let short = shortfalls(&new.lines, &seen);
        if !short.is_empty() {
            tx.rollback().await?;
            return Err(InventoryError::ShortOfStock(short));
        }
        let locked = lock_stock(&mut tx, &ids).await?;
        let before: HashMap<Uuid, i64> = locked.iter().map(|(k, v)| (*k, v.available)).collect();
        let short = shortfalls(&new.lines, &before);
        if !short.is_empty() {
            // Roll back now rather than on drop: the stock rows of a hot product are locked.
            tx.rollback().await?;
            return Err(InventoryError::ShortOfStock(short));
        }
        let after: Vec<(Uuid, i64)> = sqlx::query_as(
            "UPDATE stock s SET available = s.available - l.quantity, \
             reserved = s.reserved + l.quantity, updated_at = now() \
             FROM unnest($1::uuid[], $2::bigint[]) AS l (product_id, quantity) \
             WHERE s.product_id = l.product_id RETURNING s.product_id, s.available",
        )
        .bind(&ids)
        .bind(&quantities)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO reservation_lines (reservation_id, product_id, quantity) \
             SELECT $1, l.product_id, l.quantity \
             FROM unnest($2::uuid[], $3::bigint[]) AS l (product_id, quantity)",
        )
        .bind(new.id)
        .bind(&ids)
        .bind(&quantities)
        .execute(&mut *tx)
        .await?;
        let reservation = head.with_lines(lines)?;
        let reserved = EventEnvelope::new(events::stock_reserved(&reservation))
            .with_correlation_id(reservation.order_id.to_string());
        shop_outbox::add(&mut tx, &reserved).await?;
        for (product_id, available) in after {
            let was = before.get(&product_id).copied().unwrap_or(available);
            self.low_stock(&mut tx, product_id, was, available).await?;
        }
        tx.commit().await?;
        Ok(reservation)
    }

    /// Releases or commits reservation `id`; doing it again returns it unchanged, and the other
    /// final state is refused.
    #[tracing::instrument(skip_all, fields(reservation_id = %id))]
    pub async fn finish(&self, id: Uuid, to: Finish<'_>) -> Result<Reservation, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let head = sqlx::query_as::<_, HeadRow>(&format!(
            "SELECT {HEAD_COLUMNS} FROM reservations WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(InventoryError::ReservationNotFound(id))?;
        let reservation = finish_locked(&mut tx, head, to).await?;
        tx.commit().await?;
        Ok(reservation)
    }

    /// Releases the reservation that expired first, if any; `None` when none is left.
    /// Replicas sweep side by side: each skips the reservations another one holds.
    #[tracing::instrument(skip_all)]
    pub async fn release_one_expired(&self) -> Result<Option<Reservation>, InventoryError> {
        let mut tx = self.pool.begin().await?;
        let head = sqlx::query_as::<_, HeadRow>(&format!(
            "SELECT {HEAD_COLUMNS} FROM reservations \
             WHERE status = 'reserved' AND expires_at <= now() \
             ORDER BY expires_at LIMIT 1 FOR UPDATE SKIP LOCKED"
        ))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(head) = head else {
            tx.rollback().await?;
            return Ok(None);
        };
        let released = finish_locked(
            &mut tx,
            head,
            Finish::Release {
                reason: events::REASON_EXPIRED,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Some(released))
    }

    async fn reservation(&self, id: Uuid) -> Result<Option<Reservation>, InventoryError> {
        let mut conn = self.pool.acquire().await?;
        let head = sqlx::query_as::<_, HeadRow>(&format!(
            "SELECT {HEAD_COLUMNS} FROM reservations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        match head {
            None => Ok(None),
            Some(head) => {
                let lines = lines_of(&mut conn, id).await?;
                head.with_lines(lines).map(Some)
            }
        }
    }
}

/// Moves the locked reservation `head` to where `to` says, if it may go there.
async fn finish_locked(
    conn: &mut PgConnection,
    head: HeadRow,
    to: Finish<'_>,
) -> Result<Reservation, InventoryError> {
    let lines = lines_of(conn, head.id).await?;
    let status = head.status()?;
    if status == to.status() {
        return head.with_lines(lines);
    }
    if status != ReservationStatus::Reserved {
        return Err(InventoryError::Finished {
            id: head.id,
            status,
        });
    }
    let (ids, quantities) = columns(&lines);
    lock_stock(conn, &ids).await?;
    let (move_to, reason) = match to {
        Finish::Release { reason } => ("available", Some(reason)),
        Finish::Commit => ("committed", None),
    };
    sqlx::query(&format!(
        "UPDATE stock s SET {move_to} = s.{move_to} + l.quantity, \
         reserved = s.reserved - l.quantity, updated_at = now() \
         FROM unnest($1::uuid[], $2::bigint[]) AS l (product_id, quantity) \
         WHERE s.product_id = l.product_id"
    ))
    .bind(&ids)
    .bind(&quantities)
    .execute(&mut *conn)
    .await?;
    let head = sqlx::query_as::<_, HeadRow>(&format!(
        "UPDATE reservations SET status = $2, release_reason = $3, updated_at = now() \
         WHERE id = $1 RETURNING {HEAD_COLUMNS}"
    ))
    .bind(head.id)
    .bind(to.status().as_str())
    .bind(reason)
    .fetch_one(&mut *conn)
    .await?;
    let reservation = head.with_lines(lines)?;
    if let Some(reason) = reason {
        let released = EventEnvelope::new(events::stock_released(&reservation, reason))
            .with_correlation_id(reservation.order_id.to_string());
        shop_outbox::add(conn, &released).await?;
    }
    Ok(reservation)
}

async fn lines_of(conn: &mut PgConnection, id: Uuid) -> Result<Vec<Line>, InventoryError> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT product_id, quantity FROM reservation_lines \
         WHERE reservation_id = $1 ORDER BY product_id",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(product_id, quantity)| Line {
            product_id,
            quantity,
        })
        .collect())
}

/// The available units of `ids` as committed now, without locking.
async fn available(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, i64>, InventoryError> {
    let rows: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT product_id, available FROM stock WHERE product_id = ANY($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// `lines` as the two arrays `unnest` takes.
fn columns(lines: &[Line]) -> (Vec<Uuid>, Vec<i64>) {
    lines.iter().map(|l| (l.product_id, l.quantity)).unzip()
}
