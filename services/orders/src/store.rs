//! PostgreSQL: the event store, the read model and the idempotency keys. The only module with
//! SQL.
//!
//! # How a change is written
//! Every change of an order goes through [`PgOrderStore::change`]: in one transaction it (if
//! given) holds the saga's fence and claims the inbox entry, reads the order's events, folds
//! them, asks the caller what to append, appends at `version + 1…` (the primary key
//! `(order_id, version)` refuses a concurrent append, and the whole change is tried again on
//! the new state), upserts the read model row from the new state, writes the outbox rows and
//! starts any saga run, and notifies `WatchOrder` streams (`pg_notify`). So the events, the read
//! model, the outgoing events and the saga commit together or not at all.

use futures::TryStreamExt as _;
use serde::Serialize;
use shop_events::{EncodedEvent, Inbox};
use shop_saga::Fence;
use sqlx::{PgConnection, PgPool, Row as _, postgres::PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    convert,
    domain::{Order, OrderEvent, Recorded, Status},
    error::OrdersError,
};

/// The `LISTEN` channel carrying the id of every order that changed.
pub const CHANGES_CHANNEL: &str = "shop_orders";

/// Times a change is tried when other writers keep appending first.
const CHANGE_ATTEMPTS: usize = 8;

/// A saga run to start with a change.
#[derive(Debug, Clone)]
pub struct SagaStart {
    pub kind: &'static str,
    pub id: Uuid,
    pub data: serde_json::Value,
}

impl SagaStart {
    pub fn new(kind: &'static str, id: Uuid, data: &impl Serialize) -> Result<Self, OrdersError> {
        Ok(Self {
            kind,
            id,
            data: serde_json::to_value(data)?,
        })
    }
}

/// An event orders publishes about a change, built from the order as the change leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    Placed,
    Confirmed,
    Cancelled,
}

impl Announce {
    fn encode(self, order: &Order) -> Result<EncodedEvent, OrdersError> {
        Ok(match self {
            Self::Placed => convert::order_placed(order).encode()?,
            Self::Confirmed => convert::order_confirmed(order).encode()?,
            Self::Cancelled => convert::order_cancelled(order).encode()?,
        })
    }
}

/// What a change appends and what goes with it.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub events: Vec<OrderEvent>,
    /// Written to the outbox in the change's transaction.
    pub announce: Vec<Announce>,
    pub saga: Option<SagaStart>,
}

/// What [`PgOrderStore::change`] did.
#[allow(clippy::large_enum_variant)] // one per change, moved once
#[derive(Debug, Clone)]
pub enum Changed {
    /// The order after the change (unchanged if nothing was appended).
    Order(Order),
    /// The inbox had the event already: nothing was read or written.
    SeenBefore,
}

/// The idempotency scope of a PlaceOrder call.
#[derive(Debug, Clone)]
pub struct OrderKey {
    pub customer_id: Uuid,
    pub key: String,
    /// The request as it is compared for retries (canonical JSON of the cart).
    pub request: serde_json::Value,
}

/// What PlaceOrder's write found.
#[derive(Debug, Clone)]
pub enum Placing {
    /// This call placed the order.
    Placed(Order),
    /// The key placed this order before, for the same cart.
    Existing(Order),
    /// The key was used for a different cart.
    KeyReused,
}

/// One page of a customer's orders.
#[derive(Debug, Clone)]
pub struct Page {
    pub orders: Vec<Order>,
    pub has_more: bool,
}

/// What a projection rebuild found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    /// Orders folded from their events.
    pub orders: u64,
    /// Events read.
    pub events: u64,
    /// Read model rows that differed from the fold (rewritten).
    pub repaired: u64,
    /// Read model rows without events (deleted).
    pub removed: u64,
}

/// The orders database.
#[derive(Debug, Clone)]
pub struct PgOrderStore {
    pool: PgPool,
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

fn recorded(row: &PgRow) -> Result<Recorded, OrdersError> {
    let payload: String = row.try_get("payload")?;
    Ok(Recorded {
        version: row.try_get("version")?,
        occurred_at: row.try_get("occurred_at")?,
        event: serde_json::from_str(&payload)?,
    })
}

fn body(row: &PgRow) -> Result<Order, OrdersError> {
    let body: String = row.try_get("body")?;
    Ok(serde_json::from_str(&body)?)
}

impl PgOrderStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn events_in(
        conn: &mut PgConnection,
        order_id: Uuid,
        after: i64,
    ) -> Result<Vec<Recorded>, OrdersError> {
        let rows = sqlx::query(
            "SELECT version, occurred_at, payload::text AS payload FROM order_events \
             WHERE order_id = $1 AND version > $2 ORDER BY version",
        )
        .bind(order_id)
        .bind(after)
        .fetch_all(conn)
        .await?;
        rows.iter().map(recorded).collect()
    }

    /// The order folded from its events, `None` if it has none.
    pub async fn load(&self, order_id: Uuid) -> Result<Option<Order>, OrdersError> {
        let mut conn = self.pool.acquire().await?;
        let events = Self::events_in(&mut conn, order_id, 0).await?;
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(Order::fold(order_id, &events)?))
    }

    /// The order's events after `version`, in order.
    pub async fn events_after(
        &self,
        order_id: Uuid,
        version: i64,
    ) -> Result<Vec<Recorded>, OrdersError> {
        let mut conn = self.pool.acquire().await?;
        Self::events_in(&mut conn, order_id, version).await
    }

    /// Appends `events` after `order` (whose version the stream must still have) and writes the
    /// read model; `Ok(None)` if another writer appended first.
    async fn append(
        tx: &mut PgConnection,
        order: &Order,
        events: &[OrderEvent],
    ) -> Result<Option<Order>, OrdersError> {
        let now = crate::domain::now();
        let mut next = order.clone();
        let mut versions = Vec::with_capacity(events.len());
        let mut kinds = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        for event in events {
            let record = Recorded {
                version: next.version + 1,
                occurred_at: now,
                event: event.clone(),
            };
            next.apply(&record)?;
            versions.push(record.version);
            kinds.push(event.kind());
            payloads.push(serde_json::to_string(event)?);
        }
        if !Self::insert_events(tx, next.id, &versions, &kinds, &payloads, now).await? {
            return Ok(None);
        }
        Self::write_read_model(tx, &next).await?;
        Ok(Some(next))
    }

    /// `false` on a version conflict.
    async fn insert_events(
        tx: &mut PgConnection,
        order_id: Uuid,
        versions: &[i64],
        kinds: &[&str],
        payloads: &[String],
        at: OffsetDateTime,
    ) -> Result<bool, OrdersError> {
        let inserted = sqlx::query(
            "INSERT INTO order_events (order_id, version, type, payload, occurred_at) \
             SELECT $1, v, t, p::jsonb, $5 FROM unnest($2::int8[], $3::text[], $4::text[]) \
                 AS e(v, t, p)",
        )
        .bind(order_id)
        .bind(versions)
        .bind(kinds)
        .bind(payloads)
        .bind(at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(err) if is_unique_violation(&err) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    async fn write_read_model(tx: &mut PgConnection, order: &Order) -> Result<(), OrdersError> {
        sqlx::query(
            "INSERT INTO orders (order_id, customer_id, status, version, created_at, updated_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) \
             ON CONFLICT (order_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, \
                 status = EXCLUDED.status, version = EXCLUDED.version, \
                 created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
                 body = EXCLUDED.body \
             WHERE orders.version < EXCLUDED.version",
        )
        .bind(order.id)
        .bind(order.customer_id)
        .bind(order.status.as_str())
        .bind(order.version)
        .bind(order.created_at)
        .bind(order.updated_at)
        .bind(serde_json::to_string(order)?)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES_CHANNEL)
            .bind(order.id.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    async fn side_effects(
        tx: &mut PgConnection,
        order: &Order,
        change: &Change,
    ) -> Result<(), OrdersError> {
        for announce in &change.announce {
            shop_outbox::add_encoded(tx, &announce.encode(order)?).await?;
        }
        if let Some(saga) = &change.saga {
            shop_saga::start(tx, saga.kind, saga.id, &saga.data).await?;
        }
        Ok(())
    }

    /// Places an order: the key, `Placed` (version 1), the read model row, the outbox rows and
    /// the saga run, in one transaction. A key seen before returns its order (same cart) or
    /// [`Placing::KeyReused`]; of concurrent calls with one key exactly one places.
    pub async fn place(
        &self,
        key: &OrderKey,
        order: &Order,
        change: &Change,
    ) -> Result<Placing, OrdersError> {
        let [placed] = change.events.as_slice() else {
            return Err(OrdersError::invalid(
                "lines",
                "a new order is one Placed event",
            ));
        };
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO order_keys (customer_id, idempotency_key, request, order_id) \
             VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT DO NOTHING",
        )
        .bind(key.customer_id)
        .bind(&key.key)
        .bind(key.request.to_string())
        .bind(order.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // Another call with this key committed first (its insert made ours wait).
            tx.rollback().await?;
            return self.existing(key).await;
        }
        let payload = serde_json::to_string(placed)?;
        let written = Self::insert_events(
            &mut tx,
            order.id,
            &[1],
            &[placed.kind()],
            &[payload],
            order.created_at,
        )
        .await?;
        if !written {
            return Err(OrdersError::Contended(order.id));
        }
        Self::write_read_model(&mut tx, order).await?;
        Self::side_effects(&mut tx, order, change).await?;
        tx.commit().await?;
        Ok(Placing::Placed(order.clone()))
    }

    /// The order a key placed, if the key was used: [`Placing::Existing`] for the same cart,
    /// [`Placing::KeyReused`] for another.
    pub async fn find_key(&self, key: &OrderKey) -> Result<Option<Placing>, OrdersError> {
        let row = sqlx::query(
            "SELECT order_id, request = $3::jsonb AS same FROM order_keys \
             WHERE customer_id = $1 AND idempotency_key = $2",
        )
        .bind(key.customer_id)
        .bind(&key.key)
        .bind(key.request.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        if !row.try_get::<bool, _>("same")? {
            return Ok(Some(Placing::KeyReused));
        }
        let order_id: Uuid = row.try_get("order_id")?;
        let order = self
            .get(order_id)
            .await?
            .ok_or(OrdersError::NotFound(order_id))?;
        Ok(Some(Placing::Existing(order)))
    }

    async fn existing(&self, key: &OrderKey) -> Result<Placing, OrdersError> {
        self.find_key(key)
            .await?
            .ok_or_else(|| OrdersError::KeyReused(key.key.clone()))
    }

    /// Changes an order as `decide` says, given its current state, in one transaction with
    /// everything that goes with it (see the module doc). `fence`: the saga claim the change
    /// is part of (the write commits only while the claim holds). `inbox`: the consumer and
    /// event this change applies (applied once).
    pub async fn change<F>(
        &self,
        order_id: Uuid,
        fence: Option<Fence>,
        inbox: Option<(&Inbox, Uuid)>,
        decide: F,
    ) -> Result<Changed, OrdersError>
    where
        F: Fn(&Order) -> Result<Option<Change>, OrdersError>,
    {
        for _ in 0..CHANGE_ATTEMPTS {
            let mut tx = self.pool.begin().await?;
            if let Some(fence) = fence {
                fence.hold(&mut tx).await?;
            }
            if let Some((inbox, event_id)) = inbox
                && !inbox.claim(&mut tx, event_id).await?
            {
                tx.rollback().await?;
                return Ok(Changed::SeenBefore);
            }
            let events = Self::events_in(&mut tx, order_id, 0).await?;
            if events.is_empty() {
                return Err(OrdersError::NotFound(order_id));
            }
            let order = Order::fold(order_id, &events)?;
            let Some(change) = decide(&order)? else {
                tx.commit().await?;
                return Ok(Changed::Order(order));
            };
            let Some(next) = Self::append(&mut tx, &order, &change.events).await? else {
                tx.rollback().await?;
                continue;
            };
            Self::side_effects(&mut tx, &next, &change).await?;
            tx.commit().await?;
            return Ok(Changed::Order(next));
        }
        Err(OrdersError::Contended(order_id))
    }

    /// The order's read model row.
    pub async fn get(&self, order_id: Uuid) -> Result<Option<Order>, OrdersError> {
        let row = sqlx::query("SELECT body::text AS body FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(body).transpose()
    }

    /// A page of a customer's orders, newest first, after `(created_at, order_id)`.
    pub async fn list(
        &self,
        customer_id: Uuid,
        status: Option<Status>,
        after: Option<(OffsetDateTime, Uuid)>,
        limit: u32,
    ) -> Result<Page, OrdersError> {
        let (after_time, after_id) = after.unzip();
        let rows = sqlx::query(
            "SELECT body::text AS body FROM orders \
             WHERE customer_id = $1 AND ($2::text IS NULL OR status = $2) \
               AND ($3::timestamptz IS NULL OR (created_at, order_id) < ($3, $4)) \
             ORDER BY created_at DESC, order_id DESC LIMIT $5",
        )
        .bind(customer_id)
        .bind(status.map(Status::as_str))
        .bind(after_time)
        .bind(after_id)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut orders = rows.iter().map(body).collect::<Result<Vec<_>, _>>()?;
        let has_more = orders.len() > limit as usize;
        orders.truncate(limit as usize);
        Ok(Page { orders, has_more })
    }

    /// Every order of the read model, oldest first, for `/admin/state`.
    pub async fn all(&self) -> Result<Vec<Order>, OrdersError> {
        let rows =
            sqlx::query("SELECT body::text AS body FROM orders ORDER BY created_at, order_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(body).collect()
    }

    /// Rebuilds the read model from the events: every order is folded again and its row
    /// rewritten if it differs; rows without events are deleted. Writers wait while it runs
    /// (the read model is locked against concurrent upserts), so the result is the read model
    /// the events imply at that moment. Events are streamed, one order in memory at a time.
    pub async fn rebuild_read_model(&self) -> Result<RebuildReport, OrdersError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let live: std::collections::HashMap<Uuid, String> =
            sqlx::query("SELECT order_id, body::text AS body FROM orders")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| Ok((row.try_get("order_id")?, row.try_get("body")?)))
                .collect::<Result<_, sqlx::Error>>()?;
        let mut report = RebuildReport::default();
        let mut folded: Vec<Order> = Vec::new();
        {
            let mut rows = sqlx::query(
                "SELECT order_id, version, occurred_at, payload::text AS payload \
                 FROM order_events ORDER BY order_id, version",
            )
            .fetch(&mut *tx);
            let mut current: Option<(Uuid, Vec<Recorded>)> = None;
            while let Some(row) = rows.try_next().await? {
                report.events += 1;
                let order_id: Uuid = row.try_get("order_id")?;
                let event = recorded(&row)?;
                match &mut current {
                    Some((id, events)) if *id == order_id => events.push(event),
                    _ => {
                        if let Some((id, events)) = current.replace((order_id, vec![event])) {
                            folded.push(Order::fold(id, &events)?);
                        }
                    }
                }
            }
            if let Some((id, events)) = current {
                folded.push(Order::fold(id, &events)?);
            }
        }
        let mut seen = std::collections::HashSet::with_capacity(folded.len());
        for order in folded {
            report.orders += 1;
            seen.insert(order.id);
            let same = live.get(&order.id).is_some_and(|stored| {
                serde_json::from_str::<Order>(stored).ok().as_ref() == Some(&order)
            });
            if !same {
                report.repaired += 1;
                sqlx::query("DELETE FROM orders WHERE order_id = $1")
                    .bind(order.id)
                    .execute(&mut *tx)
                    .await?;
                Self::write_read_model(&mut tx, &order).await?;
            }
        }
        for id in live.keys().filter(|id| !seen.contains(id)) {
            report.removed += 1;
            sqlx::query("DELETE FROM orders WHERE order_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(report)
    }
}
