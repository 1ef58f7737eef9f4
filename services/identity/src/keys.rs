//! The keys that sign access tokens, kept in the database and shared by every replica.
//!
//! The newest unretired key signs; every unretired key is published by `GetJwks`. A rotation
//! inserts a newer key; each replica re-reads the keys every `SIGNING_KEY_REFRESH_SECS`, so
//! it signs with the new key soon after, and the replaced key stays published until every
//! token it can have signed has expired (`TokenConfig::replaced_key_lifetime`), then is
//! retired and its private half destroyed.
//!
//! At rest a private half is sealed under the key-encryption key (`kek`). Rows found in
//! clear (written before a key-encryption key was configured) or sealed under a previous
//! key-encryption key are resealed under the current one when they are read.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use ed25519_dalek::SigningKey;
use shop_auth::JwtSigner;
use shop_runtime::UserTokenConfig;

use crate::{
    config::TokenConfig,
    error::IdentityError,
    kek::{Kek, SECRET_LEN},
    store::{PgIdentityStore, SigningKeyRow, StoredSecret},
};

/// What a rotation did.
#[derive(Debug)]
pub struct Rotation {
    /// The new key, which signs from now on.
    pub kid: String,
    /// Every key published after the rotation, newest first.
    pub published_kids: Vec<String>,
    /// When the keys it replaced are retired, at the latest.
    pub replaced_keys_retire_at: SystemTime,
}

/// The signing keys in use, re-read from the database.
#[derive(Debug, Clone)]
pub struct KeyRing {
    vault: Arc<Vault>,
    signer: Arc<RwLock<Arc<JwtSigner>>>,
}

/// The stored keys and what opens them.
#[derive(Debug)]
struct Vault {
    store: PgIdentityStore,
    kek: Option<Kek>,
    previous_keks: Vec<Kek>,
    tokens: TokenConfig,
    claims: UserTokenConfig,
}

fn fresh_secret() -> [u8; SECRET_LEN] {
    let mut secret = [0_u8; SECRET_LEN];
    OsRng.fill_bytes(&mut secret);
    secret
}

impl KeyRing {
    /// Loads the keys, creating the first one on the first start, and reseals what is not
    /// sealed under the current key-encryption key.
    pub async fn open(
        store: PgIdentityStore,
        tokens: &TokenConfig,
        claims: &UserTokenConfig,
    ) -> Result<Self, IdentityError> {
        if tokens.signing_key_kek.is_none() {
            tracing::warn!(
                "SIGNING_KEY_KEK is not set: signing keys are stored in clear in the database"
            );
        }
        let vault = Vault {
            store,
            kek: tokens.signing_key_kek.clone(),
            previous_keks: tokens.signing_key_previous_keks.clone(),
            tokens: tokens.clone(),
            claims: claims.clone(),
        };
        if vault.store.active_keys().await?.is_empty() {
            vault.insert(fresh_secret(), true).await?;
        }
        let (signer, _) = vault.load().await?;
        Ok(Self {
            vault: Arc::new(vault),
            signer: Arc::new(RwLock::new(Arc::new(signer))),
        })
    }

    /// The signer for new tokens: the newest key at the last refresh.
    pub fn signer(&self) -> Arc<JwtSigner> {
        match self.signer.read() {
            Ok(signer) => Arc::clone(&signer),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Retires the keys replaced long enough ago, re-reads the rest, reseals what needs it,
    /// and signs with the newest from now on. Returns the unretired kids, newest first.
    pub async fn refresh(&self) -> Result<Vec<String>, IdentityError> {
        let (signer, kids) = self.vault.load().await?;
        let signer = Arc::new(signer);
        match self.signer.write() {
            Ok(mut slot) => *slot = signer,
            Err(poisoned) => *poisoned.into_inner() = signer,
        }
        Ok(kids)
    }

    /// Creates a newer key, which signs from now on here and, after their next refresh, on
    /// every replica.
    pub async fn rotate(&self) -> Result<Rotation, IdentityError> {
        let kid = self.vault.insert(fresh_secret(), false).await?;
        let published_kids = self.refresh().await?;
        tracing::info!(kid, "signing key rotated");
        Ok(Rotation {
            kid,
            published_kids,
            replaced_keys_retire_at: SystemTime::now() + self.vault.tokens.replaced_key_lifetime(),
        })
    }

    /// Re-reads the keys every `SIGNING_KEY_REFRESH_SECS` until `stop`.
    pub async fn refresh_until(self, stop: shop_runtime::CancellationToken) {
        let period = Duration::from_secs(self.vault.tokens.signing_key_refresh_secs);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {
                    if let Err(error) = self.refresh().await {
                        // The last keys stay in use; the next tick tries again.
                        tracing::warn!(%error, "re-reading the signing keys failed");
                    }
                }
            }
        }
    }
}

impl Vault {
    /// Retires the keys replaced long enough ago and opens the rest: the signer of the
    /// newest, and every unretired kid, newest first.
    async fn load(&self) -> Result<(JwtSigner, Vec<String>), IdentityError> {
        let retired = self
            .store
            .retire_replaced_keys(self.tokens.replaced_key_lifetime())
            .await?;
        for kid in &retired {
            tracing::info!(
                kid,
                "signing key retired: every token it signed has expired"
            );
        }
        let rows = self.store.active_keys().await?;
        let mut kids = Vec::with_capacity(rows.len());
        let mut newest = None;
        for row in rows {
            let key = self.open_row(&row).await?;
            if newest.is_none() {
                newest = Some((row.kid.clone(), key));
            }
            kids.push(row.kid);
        }
        let (kid, key) =
            newest.ok_or_else(|| IdentityError::Crypto("no signing key stored".into()))?;
        let signer = JwtSigner::new(
            kid,
            key,
            self.claims.jwt_issuer.clone(),
            self.claims.jwt_audience.clone(),
            Duration::from_secs(self.tokens.jwt_ttl_secs),
        );
        Ok((signer, kids))
    }

    async fn insert(
        &self,
        secret: [u8; SECRET_LEN],
        only_if_none: bool,
    ) -> Result<String, IdentityError> {
        let kid = uuid::Uuid::now_v7().to_string();
        let public = SigningKey::from_bytes(&secret).verifying_key().to_bytes();
        let stored = self.seal(&kid, &secret)?;
        self.store
            .insert_key(&kid, &public, &stored, only_if_none)
            .await?;
        Ok(kid)
    }

    fn seal(&self, kid: &str, secret: &[u8; SECRET_LEN]) -> Result<StoredSecret, IdentityError> {
        Ok(match &self.kek {
            Some(kek) => StoredSecret::Sealed {
                sealed: kek.seal(kid, secret)?,
                kek_id: kek.id().to_owned(),
            },
            None => StoredSecret::Clear(secret.to_vec()),
        })
    }

    /// The row's private key; rewrites the row when it is not sealed under the current
    /// key-encryption key or lacks its public half.
    async fn open_row(&self, row: &SigningKeyRow) -> Result<SigningKey, IdentityError> {
        let current_id = self.kek.as_ref().map(Kek::id);
        let secret: [u8; SECRET_LEN] = match (&row.sealed_key, &row.kek_id, &row.private_key) {
            (Some(sealed), Some(kek_id), _) => {
                let kek = self
                    .kek
                    .iter()
                    .chain(&self.previous_keks)
                    .find(|kek| kek.id() == kek_id)
                    .ok_or_else(|| {
                        IdentityError::Crypto(format!(
                            "signing key {} is sealed under key-encryption key {kek_id}, which is \
                             neither SIGNING_KEY_KEK ({}) nor in SIGNING_KEY_PREVIOUS_KEKS",
                            row.kid,
                            current_id.unwrap_or("unset"),
                        ))
                    })?;
                kek.open(&row.kid, sealed)?
            }
            (None, None, Some(clear)) => clear.as_slice().try_into().map_err(|_| {
                IdentityError::Crypto(format!("signing key {} is not 32 bytes", row.kid))
            })?,
            _ => {
                return Err(IdentityError::Crypto(format!(
                    "signing key {} has no private half",
                    row.kid
                )));
            }
        };
        let key = SigningKey::from_bytes(&secret);
        let public = key.verifying_key().to_bytes();
        let sealed_as_wanted = row.kek_id.as_deref() == current_id;
        if !sealed_as_wanted || row.public_key.as_deref() != Some(public.as_slice()) {
            self.store
                .rewrite_key(&row.kid, &public, &self.seal(&row.kid, &secret)?)
                .await?;
            if !sealed_as_wanted {
                tracing::info!(
                    kid = row.kid,
                    kek_id = current_id.unwrap_or("none"),
                    "signing key resealed under the current key-encryption key"
                );
            }
        }
        Ok(key)
    }
}
