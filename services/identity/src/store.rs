//! Identity's PostgreSQL store. The only module that speaks SQL.

use shop_events::EventEnvelope;
use shop_proto::identity::UserRegistered;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::IdentityError;

/// A user as stored, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub created_at: OffsetDateTime,
}

/// A user with the hash, for login.
#[derive(Debug, sqlx::FromRow)]
pub struct Credentials {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub created_at: OffsetDateTime,
    pub password_hash: String,
}

impl Credentials {
    pub fn into_user(self) -> User {
        User {
            id: self.id,
            email: self.email,
            display_name: self.display_name,
            created_at: self.created_at,
        }
    }
}

/// A stored signing key.
#[derive(Debug, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub private_key: Vec<u8>,
}

/// Users and signing keys in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgIdentityStore {
    pool: PgPool,
}

impl PgIdentityStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    #[tracing::instrument(skip_all)]
    pub async fn insert_user(
        &self,
        email: &str,
        display_name: &str,
        password_hash: &str,
    ) -> Result<User, IdentityError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query_as::<_, User>(
            "INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, $3, $4) \
             RETURNING id, email, display_name, created_at",
        )
        .bind(Uuid::now_v7())
        .bind(email)
        .bind(display_name)
        .bind(password_hash)
        .fetch_one(&mut *tx)
        .await;
        let user = match inserted {
            Ok(user) => user,
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                return Err(IdentityError::EmailTaken);
            }
            Err(err) => return Err(err.into()),
        };
        // The account and its event commit together, or neither does.
        let event = UserRegistered {
            user_id: user.id.to_string(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            occurred_at: Some(shop_runtime::convert::timestamp(user.created_at)),
        };
        shop_outbox::add(&mut tx, &EventEnvelope::new(event)).await?;
        tx.commit().await?;
        Ok(user)
    }

    #[tracing::instrument(skip_all)]
    pub async fn credentials_by_email(
        &self,
        email: &str,
    ) -> Result<Option<Credentials>, IdentityError> {
        Ok(sqlx::query_as::<_, Credentials>(
            "SELECT id, email, display_name, created_at, password_hash FROM users WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?)
    }

    #[tracing::instrument(skip_all, fields(%id))]
    pub async fn get_user(&self, id: Uuid) -> Result<User, IdentityError> {
        sqlx::query_as::<_, User>(
            "SELECT id, email, display_name, created_at FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| IdentityError::NotFound(id.to_string()))
    }

    /// Every user among `ids` that exists, in one query.
    #[tracing::instrument(skip_all, fields(count = ids.len()))]
    pub async fn batch_get_users(&self, ids: &[Uuid]) -> Result<Vec<User>, IdentityError> {
        Ok(sqlx::query_as::<_, User>(
            "SELECT id, email, display_name, created_at FROM users WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Unretired keys, newest first.
    pub async fn active_keys(&self) -> Result<Vec<SigningKeyRow>, IdentityError> {
        Ok(sqlx::query_as::<_, SigningKeyRow>(
            "SELECT kid, private_key FROM signing_keys WHERE retired_at IS NULL \
             ORDER BY created_at DESC, kid DESC",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores a new key unless another replica stored one first (first start of several
    /// replicas at once): an advisory lock makes the check and the insert one step.
    pub async fn insert_key_if_none(
        &self,
        kid: &str,
        private_key: &[u8],
    ) -> Result<(), IdentityError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('identity.signing_keys'))")
            .execute(&mut *tx)
            .await?;
        let existing: i64 =
            sqlx::query_scalar("SELECT count(*) FROM signing_keys WHERE retired_at IS NULL")
                .fetch_one(&mut *tx)
                .await?;
        if existing == 0 {
            sqlx::query("INSERT INTO signing_keys (kid, private_key) VALUES ($1, $2)")
                .bind(kid)
                .bind(private_key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
