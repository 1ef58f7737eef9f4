//! The key that signs access tokens: the newest unretired key in the database, created on
//! the first start. Rotation is an insert of a newer key plus retiring old ones after the
//! longest token lifetime; every unretired key stays in the JWKS.

use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use ed25519_dalek::SigningKey;
use shop_auth::{Jwk, JwtSigner};
use shop_runtime::UserTokenConfig;

use crate::{config::TokenConfig, error::IdentityError, store::PgIdentityStore};

/// The signer for new tokens and the public keys to publish.
#[derive(Debug, Clone)]
pub struct Keys {
    pub signer: JwtSigner,
    pub jwks: Vec<Jwk>,
}

fn signing_key(kid: &str, bytes: &[u8]) -> Result<SigningKey, IdentityError> {
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| IdentityError::Crypto(format!("signing key {kid} is not 32 bytes")))?;
    Ok(SigningKey::from_bytes(&array))
}

pub async fn load_or_create_signer(
    store: &PgIdentityStore,
    config: &TokenConfig,
    claims: &UserTokenConfig,
) -> Result<Keys, IdentityError> {
    if store.active_keys().await?.is_empty() {
        let mut secret = [0_u8; 32];
        OsRng.fill_bytes(&mut secret);
        let kid = uuid::Uuid::now_v7().to_string();
        store.insert_key_if_none(&kid, &secret).await?;
    }
    let rows = store.active_keys().await?;
    let mut jwks = Vec::with_capacity(rows.len());
    let mut newest = None;
    for row in &rows {
        let key = signing_key(&row.kid, &row.private_key)?;
        jwks.push(Jwk::from_verifying_key(&row.kid, &key.verifying_key()));
        if newest.is_none() {
            newest = Some((row.kid.clone(), key));
        }
    }
    let (kid, key) = newest.ok_or_else(|| IdentityError::Crypto("no signing key stored".into()))?;
    let signer = JwtSigner::new(
        kid,
        key,
        claims.jwt_issuer.clone(),
        claims.jwt_audience.clone(),
        Duration::from_secs(config.jwt_ttl_secs),
    );
    Ok(Keys { signer, jwks })
}
