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

/// A stored, unretired signing key. Its private half is either in clear (`private_key`) or
/// sealed under the key-encryption key `kek_id` (`sealed_key`).
#[derive(sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub public_key: Option<Vec<u8>>,
    pub private_key: Option<Vec<u8>>,
    pub sealed_key: Option<Vec<u8>>,
    pub kek_id: Option<String>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

/// A private half as it is written: in clear, or sealed under a key-encryption key.
#[derive(Clone)]
pub enum StoredSecret {
    Clear(Vec<u8>),
    Sealed { sealed: Vec<u8>, kek_id: String },
}

impl StoredSecret {
    fn columns(&self) -> (Option<&[u8]>, Option<&[u8]>, Option<&str>) {
        match self {
            Self::Clear(secret) => (Some(secret), None, None),
            Self::Sealed { sealed, kek_id } => (None, Some(sealed), Some(kek_id)),
        }
    }
}

/// A published public key.
#[derive(Debug, sqlx::FromRow)]
pub struct PublicKeyRow {
    pub kid: String,
    pub public_key: Vec<u8>,
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
            "SELECT kid, public_key, private_key, sealed_key, kek_id FROM signing_keys \
             WHERE retired_at IS NULL ORDER BY created_at DESC, kid DESC",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The public halves of unretired keys, newest first (what GetJwks publishes).
    pub async fn published_keys(&self) -> Result<Vec<PublicKeyRow>, IdentityError> {
        Ok(sqlx::query_as::<_, PublicKeyRow>(
            "SELECT kid, public_key FROM signing_keys \
             WHERE retired_at IS NULL AND public_key IS NOT NULL \
             ORDER BY created_at DESC, kid DESC",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores a new key; with `only_if_none`, only if no unretired key exists (the first
    /// start of several replicas at once). An advisory lock makes check and insert one step,
    /// and orders concurrent rotations.
    pub async fn insert_key(
        &self,
        kid: &str,
        public_key: &[u8],
        secret: &StoredSecret,
        only_if_none: bool,
    ) -> Result<bool, IdentityError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('identity.signing_keys'))")
            .execute(&mut *tx)
            .await?;
        if only_if_none {
            let existing: i64 =
                sqlx::query_scalar("SELECT count(*) FROM signing_keys WHERE retired_at IS NULL")
                    .fetch_one(&mut *tx)
                    .await?;
            if existing > 0 {
                tx.commit().await?;
                return Ok(false);
            }
        }
        let (clear, sealed, kek_id) = secret.columns();
        // created_at strictly after every other key's, so "newest" is this one even when
        // the clock reads the same microsecond twice.
        sqlx::query(
            "INSERT INTO signing_keys (kid, public_key, private_key, sealed_key, kek_id, created_at) \
             SELECT $1, $2, $3, $4, $5, greatest(now(), max(created_at) + interval '1 microsecond') \
             FROM signing_keys",
        )
        .bind(kid)
        .bind(public_key)
        .bind(clear)
        .bind(sealed)
        .bind(kek_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Rewrites an unretired key's stored halves (resealing, filling in the public half).
    pub async fn rewrite_key(
        &self,
        kid: &str,
        public_key: &[u8],
        secret: &StoredSecret,
    ) -> Result<(), IdentityError> {
        let (clear, sealed, kek_id) = secret.columns();
        sqlx::query(
            "UPDATE signing_keys SET public_key = $2, private_key = $3, sealed_key = $4, \
             kek_id = $5 WHERE kid = $1 AND retired_at IS NULL",
        )
        .bind(kid)
        .bind(public_key)
        .bind(clear)
        .bind(sealed)
        .bind(kek_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Retires every key replaced by a newer key more than `replaced_for` ago, destroying
    /// its private half; returns the retired kids.
    pub async fn retire_replaced_keys(
        &self,
        replaced_for: std::time::Duration,
    ) -> Result<Vec<String>, IdentityError> {
        let seconds = replaced_for.as_secs_f64();
        Ok(sqlx::query_scalar(
            "UPDATE signing_keys old SET retired_at = now(), private_key = NULL, \
             sealed_key = NULL, kek_id = NULL \
             WHERE old.retired_at IS NULL AND EXISTS ( \
               SELECT 1 FROM signing_keys newer WHERE newer.retired_at IS NULL \
               AND (newer.created_at, newer.kid) > (old.created_at, old.kid) \
               AND newer.created_at <= now() - make_interval(secs => $1)) \
             RETURNING old.kid",
        )
        .bind(seconds)
        .fetch_all(&self.pool)
        .await?)
    }
}
