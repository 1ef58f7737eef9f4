//! End users' access tokens (`authorization: Bearer <jwt>`), verified with the keys identity
//! publishes through `GetJwks`.
//!
//! The keys are fetched on the first token (identity may start after this service), kept,
//! and fetched again when they are older than [`KEYS_MAX_AGE`] or a token names a key id they
//! lack (a key identity added since), at most once per [`REFRESH_GAP`] so a stream of tokens
//! with made-up key ids cannot turn into a stream of calls to identity. A token whose key id
//! arrives within the gap after a fetch waits for the gap to end and the next fetch, instead
//! of being refused: right after a rotation, the first tokens of the new key come within
//! seconds of the last fetch, and must pass. A failed fetch keeps the keys in hand. One fetch
//! runs at a time; callers waiting for it share its result.
//!
//! What a token must be is `shop_auth::JwtVerifier`'s: EdDSA only (`alg: none`, HS256 with the
//! public key and any other algorithm are refused before a key is touched), `typ` JWT, and
//! `exp`, `nbf`, `iat`, `iss`, `aud` checked.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use shop_auth::{Claims, Jwk, JwtError, JwtVerifier};
use shop_proto::identity::{GetJwksRequest, identity_service_client::IdentityServiceClient};
use tokio::sync::{Mutex, RwLock};

use crate::client::ResilientChannel;

/// Keys older than this are fetched again before use.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(300);

/// Fetches for unknown key ids are at least this far apart (at most one call a second to
/// identity per verifier, however many made-up key ids arrive); also the longest a token
/// with a new key id waits for its key.
pub const REFRESH_GAP: Duration = Duration::from_secs(1);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// This service has no `IDENTITY_URL`, so it accepts no user token.
    #[error("this service verifies no user tokens (IDENTITY_URL is not set)")]
    NotConfigured,
    /// identity's keys could not be fetched and none are in hand.
    #[error("identity's token keys are unavailable: {0}")]
    KeysUnavailable(String),
    /// The token itself.
    #[error(transparent)]
    Token(#[from] JwtError),
}

/// Verifies user tokens; cheap to clone.
#[derive(Clone)]
pub struct UserTokens {
    inner: Arc<Inner>,
}

struct Inner {
    identity: Option<IdentityServiceClient<ResilientChannel>>,
    issuer: String,
    audience: String,
    keys: RwLock<Option<Fetched>>,
    fetching: Mutex<()>,
}

#[derive(Clone)]
struct Fetched {
    verifier: Arc<JwtVerifier>,
    at: Instant,
}

impl std::fmt::Debug for UserTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserTokens")
            .field("configured", &self.inner.identity.is_some())
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .finish_non_exhaustive()
    }
}

impl UserTokens {
    /// Tokens of `issuer` for `audience`, with keys from `identity`; `None` accepts none.
    #[must_use]
    pub fn new(
        identity: Option<IdentityServiceClient<ResilientChannel>>,
        issuer: String,
        audience: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                identity,
                issuer,
                audience,
                keys: RwLock::new(None),
                fetching: Mutex::new(()),
            }),
        }
    }

    /// The claims of `token` if it is valid.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if self.inner.identity.is_none() {
            return Err(TokenError::NotConfigured);
        }
        let fetched = self
            .keys(|fetched| fetched.at.elapsed() < KEYS_MAX_AGE)
            .await?;
        match fetched.verifier.verify(token) {
            Err(JwtError::UnknownKey(kid)) => {
                // Within the gap after the last fetch: wait for it to end, so the key
                // identity has just published is fetched rather than its token refused.
                tokio::time::sleep(REFRESH_GAP.saturating_sub(fetched.at.elapsed())).await;
                let fresh = self
                    .keys(|fetched| fetched.at.elapsed() < REFRESH_GAP)
                    .await?;
                if Arc::ptr_eq(&fresh.verifier, &fetched.verifier) {
                    return Err(JwtError::UnknownKey(kid).into());
                }
                Ok(fresh.verifier.verify(token)?)
            }
            other => Ok(other?),
        }
    }

    /// The keys in hand while `fresh_enough` holds for them; else fetched again (keeping the
    /// old ones when the fetch fails).
    async fn keys(&self, fresh_enough: impl Fn(&Fetched) -> bool) -> Result<Fetched, TokenError> {
        if let Some(fetched) = self
            .inner
            .keys
            .read()
            .await
            .as_ref()
            .filter(|f| fresh_enough(f))
        {
            return Ok(fetched.clone());
        }
        let _one_at_a_time = self.inner.fetching.lock().await;
        // Another caller may have fetched while this one waited.
        let held = self.inner.keys.read().await.clone();
        if let Some(fetched) = held.as_ref().filter(|f| fresh_enough(f)) {
            return Ok(fetched.clone());
        }
        match self.fetch().await {
            Ok(verifier) => {
                let fetched = Fetched {
                    verifier: Arc::new(verifier),
                    at: Instant::now(),
                };
                *self.inner.keys.write().await = Some(fetched.clone());
                Ok(fetched)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot fetch identity's token keys");
                held.ok_or(error)
            }
        }
    }

    async fn fetch(&self) -> Result<JwtVerifier, TokenError> {
        let mut client = self
            .inner
            .identity
            .clone()
            .ok_or(TokenError::NotConfigured)?;
        let response = client
            .get_jwks(GetJwksRequest {})
            .await
            .map_err(|status| TokenError::KeysUnavailable(status.message().to_owned()))?;
        let keys: Vec<Jwk> = response
            .into_inner()
            .keys
            .into_iter()
            .map(|key| Jwk {
                kty: key.kty,
                crv: key.crv,
                kid: key.kid,
                x: key.x,
                alg: key.alg,
                use_: key.r#use,
            })
            .collect();
        // A key identity publishes that this verifier cannot use is skipped, not fatal.
        let usable: Vec<Jwk> = keys
            .into_iter()
            .filter(|jwk| jwk.verifying_key().is_ok())
            .collect();
        Ok(JwtVerifier::new(
            &usable,
            self.inner.issuer.clone(),
            self.inner.audience.clone(),
        )?)
    }
}
