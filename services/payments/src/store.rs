//! Payments' PostgreSQL store. The only module that speaks SQL.
//!
//! A payment's captured and refunded amounts are read as sums of its ledger entries; a
//! transition writes the payment, its ledger entry, its event (outbox) and the idempotency
//! key's answer in one transaction.

use shop_events::EventEnvelope;
use shop_proto::common::Money;
use shop_proto::payments as pb;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Amount, Payment, Status};
use crate::error::PaymentsError;

/// The mutating operations, as stored with their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Authorize,
    Capture,
    Void,
    Refund,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorize => "authorize",
            Self::Capture => "capture",
            Self::Void => "void",
            Self::Refund => "refund",
        }
    }
}

/// A stored idempotency key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub operation: String,
    pub request: String,
    pub payment_id: Uuid,
    pub result: Option<Vec<u8>>,
}

/// What claiming a key found.
#[derive(Debug)]
pub enum Claim {
    /// The key is new and now pending with this request.
    Claimed,
    /// The key exists (inserted concurrently or earlier).
    Exists(KeyRow),
}

/// A change of a payment: what [`PgPaymentStore::finish`] writes.
#[derive(Debug)]
pub enum Transition {
    /// A new payment held by the processor.
    Authorized,
    /// A new payment the processor declined: no money moved.
    Declined,
    /// `minor` units were charged.
    Captured { minor: i64 },
    /// The hold was dropped.
    Voided,
    /// `minor` units were returned.
    Refunded { minor: i64, reason: String },
}

#[derive(Debug, sqlx::FromRow)]
struct PaymentRow {
    id: Uuid,
    order_id: Uuid,
    customer_id: Uuid,
    status: String,
    currency: String,
    authorized_minor: i64,
    captured_minor: i64,
    refunded_minor: i64,
    processor_reference: String,
    failure_reason: String,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

const SELECT_PAYMENT: &str = "SELECT p.id, p.order_id, p.customer_id, p.status, p.currency, \
     p.authorized_minor, p.processor_reference, p.failure_reason, p.created_at, p.updated_at, \
     COALESCE((SELECT sum(amount_minor) FROM ledger_entries l \
               WHERE l.payment_id = p.id AND l.kind = 'capture'), 0)::BIGINT AS captured_minor, \
     COALESCE((SELECT sum(amount_minor) FROM ledger_entries l \
               WHERE l.payment_id = p.id AND l.kind = 'refund'), 0)::BIGINT AS refunded_minor \
     FROM payments p WHERE p.id = $1";

impl TryFrom<PaymentRow> for Payment {
    type Error = PaymentsError;

    fn try_from(row: PaymentRow) -> Result<Self, PaymentsError> {
        let status = Status::parse(&row.status)
            .ok_or_else(|| PaymentsError::CorruptResult(format!("status {}", row.status)))?;
        Ok(Payment {
            id: row.id,
            order_id: row.order_id,
            customer_id: row.customer_id,
            status,
            currency: row.currency,
            authorized_minor: row.authorized_minor,
            captured_minor: row.captured_minor,
            refunded_minor: row.refunded_minor,
            processor_reference: row.processor_reference,
            failure_reason: row.failure_reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// One payment as `/admin/state` lists it: its balances and how many captures its ledger has.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentSummary {
    pub id: Uuid,
    pub order_id: Uuid,
    pub status: String,
    pub currency: String,
    pub authorized_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub captures: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl PaymentSummary {
    /// The stored status, read.
    pub fn status(&self) -> Result<Status, PaymentsError> {
        Status::parse(&self.status)
            .ok_or_else(|| PaymentsError::CorruptResult(format!("status {}", self.status)))
    }
}

/// Money of `minor` units of `currency`, for events.
pub fn money(minor: i64, currency: &str) -> Money {
    let (units, nanos) = Amount::parts(minor, currency);
    Money {
        units,
        nanos,
        currency_code: currency.to_owned(),
    }
}

/// Payments, ledger and idempotency keys in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgPaymentStore {
    pool: PgPool,
}

impl PgPaymentStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    #[tracing::instrument(skip_all, fields(%id))]
    pub async fn get_payment(&self, id: Uuid) -> Result<Payment, PaymentsError> {
        sqlx::query_as::<_, PaymentRow>(SELECT_PAYMENT)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| PaymentsError::NotFound(id.to_string()))?
            .try_into()
    }

    /// Every payment with its ledger's sums and capture count, oldest first, in one query.
    #[tracing::instrument(skip_all)]
    pub async fn summaries(&self) -> Result<Vec<PaymentSummary>, PaymentsError> {
        Ok(sqlx::query_as::<_, PaymentSummary>(
            "SELECT p.id, p.order_id, p.status, p.currency, p.authorized_minor, \
             p.created_at, p.updated_at, \
             COALESCE(sum(l.amount_minor) FILTER (WHERE l.kind = 'capture'), 0)::BIGINT \
                 AS captured_minor, \
             COALESCE(sum(l.amount_minor) FILTER (WHERE l.kind = 'refund'), 0)::BIGINT \
                 AS refunded_minor, \
             count(l.id) FILTER (WHERE l.kind = 'capture') AS captures \
             FROM payments p LEFT JOIN ledger_entries l ON l.payment_id = p.id \
             GROUP BY p.id ORDER BY p.created_at, p.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The pool, for the outbox's figures.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    #[tracing::instrument(skip_all)]
    pub async fn find_key(&self, key: &str) -> Result<Option<KeyRow>, PaymentsError> {
        Ok(sqlx::query_as::<_, KeyRow>(
            "SELECT operation, request, payment_id, result FROM idempotency_keys WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Makes `key` pending for `request` on `payment_id`, unless it exists; refuses while
    /// another operation on the payment is pending.
    #[tracing::instrument(skip_all, fields(operation = operation.as_str()))]
    pub async fn claim(
        &self,
        key: &str,
        operation: Operation,
        request: &str,
        payment_id: Uuid,
    ) -> Result<Claim, PaymentsError> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (key, operation, request, payment_id, state) \
             VALUES ($1, $2, $3, $4, 'pending') ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(operation.as_str())
        .bind(request)
        .bind(payment_id)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(done) if done.rows_affected() == 1 => Ok(Claim::Claimed),
            Ok(_) => match self.find_key(key).await? {
                Some(row) => Ok(Claim::Exists(row)),
                // Gone between the two statements: only a refused operation deletes a key.
                None => Err(PaymentsError::InProgress(payment_id.to_string())),
            },
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(PaymentsError::InProgress(payment_id.to_string()))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Drops a pending key whose operation the processor refused (nothing happened).
    pub async fn release(&self, key: &str) -> Result<(), PaymentsError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND state = 'pending'")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Writes `transition` of `payment` (its state after the change), its ledger entry, its
    /// event and `answer` for `key`, in one transaction. Returns the answer stored first when
    /// another call finished the key meanwhile (then nothing is written).
    #[tracing::instrument(skip_all, fields(payment_id = %payment.id))]
    pub async fn finish(
        &self,
        key: &str,
        payment: &Payment,
        transition: &Transition,
        answer: &[u8],
    ) -> Result<Option<Vec<u8>>, PaymentsError> {
        let mut tx = self.pool.begin().await?;
        let stored: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT result FROM idempotency_keys WHERE key = $1 FOR UPDATE")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(Some(first)) = stored {
            return Ok(Some(first));
        }
        write_transition(&mut tx, key, payment, transition).await?;
        sqlx::query(
            "UPDATE idempotency_keys SET state = 'done', result = $2, completed_at = now() \
             WHERE key = $1",
        )
        .bind(key)
        .bind(answer)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(None)
    }
}

async fn write_transition(
    tx: &mut PgConnection,
    key: &str,
    p: &Payment,
    transition: &Transition,
) -> Result<(), PaymentsError> {
    if matches!(transition, Transition::Authorized | Transition::Declined) {
        sqlx::query(
            "INSERT INTO payments (id, order_id, customer_id, status, currency, authorized_minor, \
             processor_reference, failure_reason, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(p.id)
        .bind(p.order_id)
        .bind(p.customer_id)
        .bind(p.status.as_str())
        .bind(&p.currency)
        .bind(p.authorized_minor)
        .bind(&p.processor_reference)
        .bind(&p.failure_reason)
        .bind(p.created_at)
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query("UPDATE payments SET status = $2, updated_at = $3 WHERE id = $1")
            .bind(p.id)
            .bind(p.status.as_str())
            .bind(p.updated_at)
            .execute(&mut *tx)
            .await?;
    }
    let occurred_at = Some(shop_runtime::convert::timestamp(p.updated_at));
    let (payment_id, order_id) = (p.id.to_string(), p.order_id.to_string());
    match transition {
        Transition::Declined => {}
        Transition::Authorized => {
            ledger(tx, key, p, "authorization", p.authorized_minor).await?;
            let event = pb::PaymentAuthorized {
                payment_id,
                order_id,
                amount: Some(money(p.authorized_minor, &p.currency)),
                occurred_at,
            };
            shop_outbox::add(tx, &EventEnvelope::new(event)).await?;
        }
        Transition::Captured { minor } => {
            ledger(tx, key, p, "capture", *minor).await?;
            let event = pb::PaymentCaptured {
                payment_id,
                order_id,
                amount: Some(money(*minor, &p.currency)),
                occurred_at,
            };
            shop_outbox::add(tx, &EventEnvelope::new(event)).await?;
        }
        Transition::Voided => {
            ledger(tx, key, p, "void", p.authorized_minor).await?;
            let event = pb::PaymentVoided {
                payment_id,
                order_id,
                amount: Some(money(p.authorized_minor, &p.currency)),
                occurred_at,
            };
            shop_outbox::add(tx, &EventEnvelope::new(event)).await?;
        }
        Transition::Refunded { minor, reason } => {
            ledger(tx, key, p, "refund", *minor).await?;
            let event = pb::PaymentRefunded {
                payment_id,
                order_id,
                amount: Some(money(*minor, &p.currency)),
                total_refunded: Some(money(p.refunded_minor, &p.currency)),
                reason: reason.clone(),
                occurred_at,
            };
            shop_outbox::add(tx, &EventEnvelope::new(event)).await?;
        }
    }
    Ok(())
}

/// Appends one movement; the unique key makes a second movement for one request impossible.
async fn ledger(
    tx: &mut PgConnection,
    key: &str,
    p: &Payment,
    kind: &str,
    minor: i64,
) -> Result<(), PaymentsError> {
    sqlx::query(
        "INSERT INTO ledger_entries (payment_id, kind, amount_minor, currency, idempotency_key) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(p.id)
    .bind(kind)
    .bind(minor)
    .bind(&p.currency)
    .bind(key)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
