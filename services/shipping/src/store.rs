//! Shipping's PostgreSQL store. The only module that speaks SQL.
//!
//! Locking discipline: everything that decides the fate of an order's shipment from an order
//! event first takes a transaction-scoped advisory lock on the order id, so an OrderConfirmed
//! and an OrderCancelled of one order handled at once (two replicas, a redelivery) are applied
//! one after the other, never interleaved. A shipment row is then locked `FOR UPDATE` by
//! whoever changes it (the consumer, CancelShipment), and the sweeper takes due rows with
//! `FOR UPDATE SKIP LOCKED`, so replicas sweep side by side and never wait for each other or
//! move one shipment twice. No transaction takes an order lock after a shipment row lock, so no
//! wait cycle can form. Every status change and the event it implies commit together (outbox).

use std::{collections::HashMap, time::Duration};

use shop_events::Inbox;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::{Address, Cost, Line, NewShipment, Shipment, ShipmentStatus, traded_currency},
    error::ShippingError,
    events,
};

const COLUMNS: &str = "id, order_id, customer_id, status, carrier, tracking_number, \
    recipient_name, line1, line2, city, region, postal_code, country_code, cost_minor, \
    currency_code, estimated_delivery_at, delivered_at, cancel_reason, created_at, updated_at";

/// A shipment row without its lines.
#[derive(sqlx::FromRow)]
struct ShipmentRow {
    id: Uuid,
    order_id: Uuid,
    customer_id: String,
    status: String,
    carrier: String,
    tracking_number: String,
    recipient_name: String,
    line1: String,
    line2: String,
    city: String,
    region: String,
    postal_code: String,
    country_code: String,
    cost_minor: i64,
    currency_code: String,
    estimated_delivery_at: OffsetDateTime,
    delivered_at: Option<OffsetDateTime>,
    cancel_reason: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl ShipmentRow {
    fn with_lines(self, lines: Vec<Line>) -> Result<Shipment, ShippingError> {
        let status = ShipmentStatus::parse(&self.status)
            .ok_or_else(|| ShippingError::Corrupt(format!("shipment status {}", self.status)))?;
        let currency = traded_currency(&self.currency_code).ok_or_else(|| {
            ShippingError::Corrupt(format!("shipment currency {}", self.currency_code))
        })?;
        Ok(Shipment {
            id: self.id,
            order_id: self.order_id,
            customer_id: self.customer_id,
            status,
            carrier: self.carrier,
            tracking_number: self.tracking_number,
            address: Address {
                recipient_name: self.recipient_name,
                line1: self.line1,
                line2: self.line2,
                city: self.city,
                region: self.region,
                postal_code: self.postal_code,
                country_code: self.country_code,
            },
            lines,
            cost: Cost {
                minor: self.cost_minor,
                currency,
            },
            estimated_delivery_at: self.estimated_delivery_at,
            delivered_at: self.delivered_at,
            cancel_reason: self.cancel_reason,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// What an OrderConfirmed did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheduling {
    /// A shipment was scheduled and ShipmentScheduled written to the outbox.
    Scheduled(Box<Shipment>),
    /// This event was applied before (redelivery, replay): nothing done.
    SeenBefore,
    /// The order has a shipment already (another event for the same order): nothing done.
    OrderHasShipment(Uuid),
    /// The order was cancelled first: it is never shipped.
    OrderCancelled,
}

/// What an OrderCancelled did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCancellation {
    /// The order's shipment was cancelled before pickup; ShipmentCancelled written.
    ShipmentCancelled(Uuid),
    /// This event was applied before: nothing done.
    SeenBefore,
    /// No shipment (yet): the order is remembered as cancelled, so none will be scheduled.
    NoShipment,
    /// The shipment is past pickup (or cancelled already) and stays as it is.
    Kept(Uuid, ShipmentStatus),
}

/// What one sweep moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Advanced {
    pub picked_up: usize,
    pub delivered: usize,
}

/// One shipment as `/admin/state` lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ShipmentSummary {
    pub id: Uuid,
    pub order_id: Uuid,
    pub status: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Shipments in PostgreSQL, and the simulated carrier's timing.
#[derive(Debug, Clone)]
pub struct PgShippingStore {
    pool: PgPool,
    pickup_delay_secs: f64,
    delivery_delay_secs: f64,
}

impl PgShippingStore {
    pub fn new(pool: PgPool, pickup_delay_secs: f64, delivery_delay_secs: f64) -> Self {
        Self {
            pool,
            pickup_delay_secs,
            delivery_delay_secs,
        }
    }

    /// The database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies OrderConfirmed `event_id`: schedules `new` unless the event was applied before,
    /// the order has a shipment, or the order was cancelled. The inbox entry, the shipment and
    /// its ShipmentScheduled commit together.
    #[tracing::instrument(skip_all, fields(order_id = %new.order_id, %event_id))]
    pub async fn schedule(
        &self,
        inbox: &Inbox,
        event_id: Uuid,
        new: &NewShipment,
    ) -> Result<Scheduling, ShippingError> {
        let mut tx = self.pool.begin().await?;
        if !inbox.claim(&mut tx, event_id).await? {
            tx.rollback().await?;
            return Ok(Scheduling::SeenBefore);
        }
        lock_order(&mut tx, new.order_id).await?;
        if is_cancelled(&mut tx, new.order_id).await? {
            tx.commit().await?;
            return Ok(Scheduling::OrderCancelled);
        }
        let row = sqlx::query_as::<_, ShipmentRow>(&format!(
            "INSERT INTO shipments (id, order_id, customer_id, status, carrier, tracking_number, \
             recipient_name, line1, line2, city, region, postal_code, country_code, cost_minor, \
             currency_code, estimated_delivery_at, due_at) \
             VALUES ($1, $2, $3, 'scheduled', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             now() + make_interval(secs => $15 + $16), now() + make_interval(secs => $15)) \
             ON CONFLICT (order_id) DO NOTHING RETURNING {COLUMNS}"
        ))
        .bind(new.id)
        .bind(new.order_id)
        .bind(&new.customer_id)
        .bind(new.quote.carrier)
        .bind(new.tracking_number())
        .bind(&new.address.recipient_name)
        .bind(&new.address.line1)
        .bind(&new.address.line2)
        .bind(&new.address.city)
        .bind(&new.address.region)
        .bind(&new.address.postal_code)
        .bind(&new.address.country_code)
        .bind(new.quote.cost.minor)
        .bind(new.quote.cost.currency.code)
        .bind(self.pickup_delay_secs)
        .bind(self.delivery_delay_secs)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let existing: Uuid = sqlx::query_scalar("SELECT id FROM shipments WHERE order_id = $1")
                .bind(new.order_id)
                .fetch_one(&mut *tx)
                .await?;
            // The inbox entry commits: this event is handled, by doing nothing.
            tx.commit().await?;
            return Ok(Scheduling::OrderHasShipment(existing));
        };
        let (ids, quantities): (Vec<Uuid>, Vec<i64>) =
            new.lines.iter().map(|l| (l.product_id, l.quantity)).unzip();
        sqlx::query(
            "INSERT INTO shipment_lines (shipment_id, product_id, quantity) \
             SELECT $1, l.product_id, l.quantity \
             FROM unnest($2::uuid[], $3::bigint[]) AS l (product_id, quantity)",
        )
        .bind(new.id)
        .bind(&ids)
        .bind(&quantities)
        .execute(&mut *tx)
        .await?;
        let shipment = row.with_lines(new.lines.clone())?;
        shop_outbox::add(&mut tx, &events::shipment_scheduled(&shipment)).await?;
        tx.commit().await?;
        Ok(Scheduling::Scheduled(Box::new(shipment)))
    }

    /// Applies OrderCancelled `event_id`: remembers the order as cancelled and cancels its
    /// shipment if it has not been picked up. Inbox entry, changes and event commit together.
    #[tracing::instrument(skip_all, fields(%order_id, %event_id))]
    pub async fn cancel_for_order(
        &self,
        inbox: &Inbox,
        event_id: Uuid,
        order_id: Uuid,
        reason: &str,
    ) -> Result<OrderCancellation, ShippingError> {
        let mut tx = self.pool.begin().await?;
        if !inbox.claim(&mut tx, event_id).await? {
            tx.rollback().await?;
            return Ok(OrderCancellation::SeenBefore);
        }
        lock_order(&mut tx, order_id).await?;
        sqlx::query("INSERT INTO cancelled_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query_as::<_, ShipmentRow>(&format!(
            "SELECT {COLUMNS} FROM shipments WHERE order_id = $1 FOR UPDATE"
        ))
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match row {
            None => OrderCancellation::NoShipment,
            Some(row) => {
                let lines = lines_of(&mut tx, row.id).await?;
                let shipment = row.with_lines(lines)?;
                if shipment.status == ShipmentStatus::Scheduled {
                    cancel_locked(&mut tx, &shipment, reason).await?;
                    OrderCancellation::ShipmentCancelled(shipment.id)
                } else {
                    OrderCancellation::Kept(shipment.id, shipment.status)
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Cancels shipment `id` before pickup (CancelShipment). A cancelled shipment is returned
    /// as it is and nothing is published again; one in transit or delivered is refused.
    #[tracing::instrument(skip_all, fields(shipment_id = %id))]
    pub async fn cancel(&self, id: Uuid, reason: &str) -> Result<Shipment, ShippingError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query_as::<_, ShipmentRow>(&format!(
            "SELECT {COLUMNS} FROM shipments WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ShippingError::NotFound(id))?;
        let lines = lines_of(&mut tx, id).await?;
        let shipment = row.with_lines(lines)?;
        match shipment.status {
            ShipmentStatus::Cancelled => {
                tx.rollback().await?;
                Ok(shipment)
            }
            ShipmentStatus::InTransit | ShipmentStatus::Delivered => {
                tx.rollback().await?;
                Err(ShippingError::NotCancellable {
                    id,
                    status: shipment.status,
                })
            }
            ShipmentStatus::Scheduled => {
                let cancelled = cancel_locked(&mut tx, &shipment, reason).await?;
                tx.commit().await?;
                Ok(cancelled)
            }
        }
    }

    /// Shipment `id`.
    pub async fn get(&self, id: Uuid) -> Result<Shipment, ShippingError> {
        self.find("id", id)
            .await?
            .ok_or(ShippingError::NotFound(id))
    }

    /// The shipment of order `order_id`.
    pub async fn get_by_order(&self, order_id: Uuid) -> Result<Shipment, ShippingError> {
        self.find("order_id", order_id)
            .await?
            .ok_or(ShippingError::NoShipmentForOrder(order_id))
    }

    async fn find(&self, column: &str, id: Uuid) -> Result<Option<Shipment>, ShippingError> {
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query_as::<_, ShipmentRow>(&format!(
            "SELECT {COLUMNS} FROM shipments WHERE {column} = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let lines = lines_of(&mut conn, row.id).await?;
                row.with_lines(lines).map(Some)
            }
        }
    }

    /// Moves up to `limit` due shipments one step each in one transaction: picked up
    /// (SCHEDULED -> IN_TRANSIT, delivery due after the delivery delay), then delivered
    /// (IN_TRANSIT -> DELIVERED, ShipmentDelivered written to the outbox). Rows another
    /// replica holds are skipped.
    #[tracing::instrument(skip_all)]
    pub async fn advance_due(&self, limit: i64) -> Result<Advanced, ShippingError> {
        let mut tx = self.pool.begin().await?;
        let picked_up = sqlx::query(
            "UPDATE shipments SET status = 'in_transit', picked_up_at = now(), \
             due_at = now() + make_interval(secs => $2), updated_at = now() \
             WHERE id IN (SELECT id FROM shipments WHERE status = 'scheduled' \
                 AND due_at <= now() ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
        )
        .bind(limit)
        .bind(self.delivery_delay_secs)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let delivered = sqlx::query_as::<_, ShipmentRow>(&format!(
            "UPDATE shipments SET status = 'delivered', delivered_at = now(), due_at = NULL, \
             updated_at = now() \
             WHERE id IN (SELECT id FROM shipments WHERE status = 'in_transit' \
                 AND due_at <= now() ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}"
        ))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<Uuid> = delivered.iter().map(|row| row.id).collect();
        let mut lines = lines_of_many(&mut tx, &ids).await?;
        let count = delivered.len();
        for row in delivered {
            let own = lines.remove(&row.id).unwrap_or_default();
            let shipment = row.with_lines(own)?;
            shop_outbox::add(&mut tx, &events::shipment_delivered(&shipment)).await?;
        }
        tx.commit().await?;
        Ok(Advanced {
            picked_up: usize::try_from(picked_up).unwrap_or(usize::MAX),
            delivered: count,
        })
    }

    /// Forgets orders cancelled longer ago than `retention` (in batches), returns how many.
    /// Safe once `retention` outlasts the orders stream's max age, as the inbox's: no
    /// OrderConfirmed of such an order can be delivered any more.
    pub async fn purge_cancelled_orders(&self, retention: Duration) -> Result<u64, ShippingError> {
        const BATCH: i64 = 10_000;
        let mut total = 0;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM cancelled_orders WHERE order_id IN (SELECT order_id \
                 FROM cancelled_orders WHERE cancelled_at < now() - make_interval(secs => $1) \
                 LIMIT $2)",
            )
            .bind(retention.as_secs_f64())
            .bind(BATCH)
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += deleted;
            if deleted < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                return Ok(total);
            }
        }
    }

    /// Every shipment, oldest first, for `/admin/state`.
    pub async fn summaries(&self) -> Result<Vec<ShipmentSummary>, ShippingError> {
        Ok(sqlx::query_as::<_, ShipmentSummary>(
            "SELECT id, order_id, status, created_at, updated_at FROM shipments \
             ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Serialises the order events of `order_id` until the transaction ends.
async fn lock_order(conn: &mut PgConnection, order_id: Uuid) -> Result<(), ShippingError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
        .bind(order_id)
        .execute(conn)
        .await?;
    Ok(())
}

async fn is_cancelled(conn: &mut PgConnection, order_id: Uuid) -> Result<bool, ShippingError> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM cancelled_orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(conn)
            .await?;
    Ok(found.is_some())
}

/// Cancels the locked, scheduled `shipment` and writes ShipmentCancelled.
async fn cancel_locked(
    conn: &mut PgConnection,
    shipment: &Shipment,
    reason: &str,
) -> Result<Shipment, ShippingError> {
    let row = sqlx::query_as::<_, ShipmentRow>(&format!(
        "UPDATE shipments SET status = 'cancelled', due_at = NULL, cancel_reason = $2, \
         updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(shipment.id)
    .bind(reason)
    .fetch_one(&mut *conn)
    .await?;
    let cancelled = row.with_lines(shipment.lines.clone())?;
    shop_outbox::add(conn, &events::shipment_cancelled(&cancelled)).await?;
    Ok(cancelled)
}

async fn lines_of(conn: &mut PgConnection, id: Uuid) -> Result<Vec<Line>, ShippingError> {
    let mut by_shipment = lines_of_many(conn, &[id]).await?;
    Ok(by_shipment.remove(&id).unwrap_or_default())
}

/// The lines of each of `ids`, by product id.
async fn lines_of_many(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Line>>, ShippingError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(
        "SELECT shipment_id, product_id, quantity FROM shipment_lines \
         WHERE shipment_id = ANY($1) ORDER BY shipment_id, product_id",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    let mut by_shipment: HashMap<Uuid, Vec<Line>> = HashMap::with_capacity(ids.len());
    for (shipment_id, product_id, quantity) in rows {
        by_shipment.entry(shipment_id).or_default().push(Line {
            product_id,
            quantity,
        });
    }
    Ok(by_shipment)
}
