//! The catalog's PostgreSQL store. The only module that speaks SQL.

use shop_events::EventEnvelope;
use shop_proto::{catalog::ProductPriceChanged, common::Money as PbMoney};
use shop_runtime::convert::timestamp;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::{Money, NewProduct, PageStart, Product},
    error::CatalogError,
};

const COLUMNS: &str = "id, sku, name, description, category, price_units, price_nanos, \
                       currency_code, version, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct ProductRow {
    id: Uuid,
    sku: String,
    name: String,
    description: String,
    category: String,
    price_units: i64,
    price_nanos: i32,
    currency_code: String,
    version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl From<ProductRow> for Product {
    fn from(row: ProductRow) -> Self {
        Self {
            id: row.id,
            sku: row.sku,
            name: row.name,
            description: row.description,
            category: row.category,
            price: Money {
                units: row.price_units,
                nanos: row.price_nanos,
                currency_code: row.currency_code,
            },
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A product row with the fingerprint of the request that created it under a key.
#[derive(sqlx::FromRow)]
struct KeyedRow {
    #[sqlx(flatten)]
    product: ProductRow,
    idempotency_request: Option<Vec<u8>>,
}

/// A page of products and whether more follow.
#[derive(Debug)]
pub struct Page {
    pub products: Vec<Product>,
    pub has_more: bool,
}

/// Products in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgProductStore {
    pool: PgPool,
}

fn unique_violation(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) if db.is_unique_violation() => db.constraint().map(str::to_owned),
        _ => None,
    }
}

impl PgProductStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Inserts `new`, or with an idempotency key already used returns that key's product
    /// (same request) or refuses (different request).
    #[tracing::instrument(skip_all, fields(sku = %new.sku))]
    pub async fn create(&self, new: NewProduct) -> Result<Product, CatalogError> {
        let fingerprint = new.fingerprint();
        let mut tx = self.pool.begin().await?;
        if let Some(key) = &new.idempotency_key {
            // Calls with one key take turns: a concurrent retry waits for the first call to
            // commit and then finds its product, instead of colliding with it on `sku`.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("catalog.create_product:{key}"))
                .execute(&mut *tx)
                .await?;
            if let Some(existing) = by_idempotency_key(&mut tx, key).await? {
                return match existing.idempotency_request {
                    Some(first) if first != fingerprint => {
                        Err(CatalogError::IdempotencyKeyReused(key.clone()))
                    }
                    _ => Ok(existing.product.into()),
                };
            }
        }
        let inserted = sqlx::query_as::<_, ProductRow>(&format!(
            "INSERT INTO products (id, sku, name, description, category, price_units, \
             price_nanos, currency_code, idempotency_key, idempotency_request) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(&new.sku)
        .bind(&new.name)
        .bind(&new.description)
        .bind(&new.category)
        .bind(new.price.units)
        .bind(new.price.nanos)
        .bind(&new.price.currency_code)
        .bind(new.idempotency_key.as_deref())
        .bind(new.idempotency_key.is_some().then_some(fingerprint))
        .fetch_one(&mut *tx)
        .await;
        match inserted {
            Ok(row) => {
                tx.commit().await?;
                Ok(row.into())
            }
            Err(err) if unique_violation(&err).as_deref() == Some("products_sku_key") => {
                Err(CatalogError::SkuTaken(new.sku))
            }
            Err(err) => Err(err.into()),
        }
    }

    #[tracing::instrument(skip_all, fields(%id))]
    pub async fn get(&self, id: Uuid) -> Result<Product, CatalogError> {
        let row = sqlx::query_as::<_, ProductRow>(&format!(
            "SELECT {COLUMNS} FROM products WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Into::into)
            .ok_or_else(|| CatalogError::NotFound(id.to_string()))
    }

    /// Every product among `ids` that exists, in one query.
    #[tracing::instrument(skip_all, fields(count = ids.len()))]
    pub async fn batch_get(&self, ids: &[Uuid]) -> Result<Vec<Product>, CatalogError> {
        let rows = sqlx::query_as::<_, ProductRow>(&format!(
            "SELECT {COLUMNS} FROM products WHERE id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Products in creation order, optionally of one category.
    #[tracing::instrument(skip_all, fields(category, limit))]
    pub async fn list(
        &self,
        category: Option<&str>,
        start: PageStart,
        limit: u32,
    ) -> Result<Page, CatalogError> {
        let after = match start {
            PageStart::First => None,
            PageStart::After(id) => Some(id),
        };
        let rows = sqlx::query_as::<_, ProductRow>(&format!(
            "SELECT {COLUMNS} FROM products \
             WHERE ($1::uuid IS NULL OR id > $1) AND ($2::text IS NULL OR category = $2) \
             ORDER BY id LIMIT $3"
        ))
        .bind(after)
        .bind(category)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(into_page(rows, limit))
    }

    /// Products matching `query` (words, quoted phrases, `-exclusions`), best match first.
    #[tracing::instrument(skip_all, fields(offset, limit))]
    pub async fn search(&self, query: &str, offset: u32, limit: u32) -> Result<Page, CatalogError> {
        let rows = sqlx::query_as::<_, ProductRow>(&format!(
            "SELECT {COLUMNS} FROM products, websearch_to_tsquery('simple', $1) AS q \
             WHERE search @@ q \
             ORDER BY ts_rank(search, q) DESC, id \
             OFFSET $2 LIMIT $3"
        ))
        .bind(query)
        .bind(i64::from(offset))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(into_page(rows, limit))
    }

    /// Sets a new price if the product is still at `expected_version`.
    #[tracing::instrument(skip_all, fields(%id, expected_version))]
    pub async fn update_price(
        &self,
        id: Uuid,
        price: &Money,
        expected_version: i64,
    ) -> Result<Product, CatalogError> {
        let mut tx = self.pool.begin().await?;
        let current = lock(&mut tx, id).await?;
        if current.version != expected_version {
            return Err(CatalogError::VersionMismatch {
                expected: expected_version,
                actual: current.version,
            });
        }
        let row = sqlx::query_as::<_, ProductRow>(&format!(
            "UPDATE products SET price_units = $2, price_nanos = $3, currency_code = $4, \
             version = version + 1, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(price.units)
        .bind(price.nanos)
        .bind(&price.currency_code)
        .fetch_one(&mut *tx)
        .await?;
        let updated: Product = row.into();
        // The new price and its event commit together, or neither does.
        shop_outbox::add(&mut tx, &price_changed(&current, &updated)).await?;
        tx.commit().await?;
        Ok(updated)
    }
}

/// The product (and what its key's first request was) created with `key`, if any.
async fn by_idempotency_key(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
) -> Result<Option<KeyedRow>, CatalogError> {
    Ok(sqlx::query_as::<_, KeyedRow>(&format!(
        "SELECT {COLUMNS}, idempotency_request FROM products WHERE idempotency_key = $1"
    ))
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?)
}

fn money_to_pb(money: &Money) -> PbMoney {
    PbMoney {
        units: money.units,
        nanos: money.nanos,
        currency_code: money.currency_code.clone(),
    }
}

/// `ProductPriceChanged` for the change from `before` to `after`, occurring when it was stored.
fn price_changed(before: &Product, after: &Product) -> EventEnvelope<ProductPriceChanged> {
    let mut envelope = EventEnvelope::new(ProductPriceChanged {
        product_id: after.id.to_string(),
        sku: after.sku.clone(),
        old_price: Some(money_to_pb(&before.price)),
        new_price: Some(money_to_pb(&after.price)),
        version: after.version,
        occurred_at: Some(timestamp(after.updated_at)),
    });
    envelope.occurred_at = after.updated_at;
    envelope
}

async fn lock(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<Product, CatalogError> {
    let row = sqlx::query_as::<_, ProductRow>(&format!(
        "SELECT {COLUMNS} FROM products WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(Into::into)
        .ok_or_else(|| CatalogError::NotFound(id.to_string()))
}

fn into_page(rows: Vec<ProductRow>, limit: u32) -> Page {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = rows.len() > limit;
    let products = rows.into_iter().take(limit).map(Into::into).collect();
    Page { products, has_more }
}
