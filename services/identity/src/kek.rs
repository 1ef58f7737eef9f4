//! Key-encryption keys: the secret from configuration that seals signing keys at rest.
//!
//! A signing key's private half is sealed with AES-256-GCM (ring, the provider rustls already
//! builds) under the key-encryption key, a fresh random 96-bit nonce per seal, and the key's
//! `kid` as associated data, so a sealed value copied onto another row does not open. A
//! key-encryption key is named by the first 8 bytes of its SHA-256 (`kek_id`), stored beside
//! each sealed key, so a restart with a different key fails with a clear error instead of
//! garbage, and so rows sealed under a previous key can be found and resealed.

use std::str::FromStr;

use base64::Engine as _;
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest::{SHA256, digest},
    rand::{SecureRandom as _, SystemRandom},
};

use crate::error::IdentityError;

/// Bytes of a key-encryption key.
pub const KEK_LEN: usize = 32;
/// Bytes of an Ed25519 private key.
pub const SECRET_LEN: usize = 32;

/// One key-encryption key, parsed from base64 (standard or URL-safe, padding optional).
#[derive(Clone)]
pub struct Kek {
    id: String,
    bytes: [u8; KEK_LEN],
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl FromStr for Kek {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().trim_end_matches('=');
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| "a key-encryption key must be base64".to_owned())?;
        let bytes: [u8; KEK_LEN] = decoded.try_into().map_err(|bytes: Vec<u8>| {
            format!(
                "a key-encryption key must be {KEK_LEN} bytes (base64 of 32 random bytes), not {}",
                bytes.len()
            )
        })?;
        Ok(Self::from_bytes(bytes))
    }
}

impl Kek {
    /// The key made of `bytes`.
    #[must_use]
    pub fn from_bytes(bytes: [u8; KEK_LEN]) -> Self {
        let hash = digest(&SHA256, &bytes);
        let id = hash.as_ref()[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self { id, bytes }
    }

    /// Its name in `signing_keys.kek_id`.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aead(&self) -> Result<LessSafeKey, IdentityError> {
        UnboundKey::new(&AES_256_GCM, &self.bytes)
            .map(LessSafeKey::new)
            .map_err(|_| IdentityError::Crypto("key-encryption key rejected by AES-256-GCM".into()))
    }

    /// `secret` sealed for the row `kid`: nonce, then ciphertext and tag.
    pub fn seal(&self, kid: &str, secret: &[u8; SECRET_LEN]) -> Result<Vec<u8>, IdentityError> {
        let mut nonce = [0_u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| IdentityError::Crypto("no randomness for a nonce".into()))?;
        let mut in_out = secret.to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| IdentityError::Crypto(format!("sealing signing key {kid} failed")))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// The secret sealed for the row `kid`; fails on any other key, row or altered byte.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<[u8; SECRET_LEN], IdentityError> {
        let failed = || {
            IdentityError::Crypto(format!(
                "signing key {kid} does not open with key-encryption key {}",
                self.id
            ))
        };
        if sealed.len() < NONCE_LEN {
            return Err(failed());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| failed())?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .aead()?
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut in_out)
            .map_err(|_| failed())?;
        <[u8; SECRET_LEN]>::try_from(&*plain).map_err(|_| failed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        Kek::from_bytes([byte; KEK_LEN])
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_kek_and_its_row() {
        let secret = [7_u8; SECRET_LEN];
        let sealed = kek(1).seal("kid-a", &secret).unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + SECRET_LEN + 16);
        assert!(!sealed.windows(SECRET_LEN).any(|w| w == secret));
        assert_eq!(kek(1).open("kid-a", &sealed).unwrap(), secret);
        assert!(kek(2).open("kid-a", &sealed).is_err(), "another KEK");
        assert!(kek(1).open("kid-b", &sealed).is_err(), "another row");
        let mut altered = sealed.clone();
        altered[NONCE_LEN] ^= 1;
        assert!(kek(1).open("kid-a", &altered).is_err(), "an altered byte");
        assert!(kek(1).open("kid-a", &sealed[..5]).is_err(), "truncated");
    }

    #[test]
    fn two_seals_of_one_secret_differ() {
        let secret = [9_u8; SECRET_LEN];
        assert_ne!(
            kek(1).seal("k", &secret).unwrap(),
            kek(1).seal("k", &secret).unwrap()
        );
    }

    #[test]
    fn keks_parse_from_base64_of_32_bytes() {
        let text = base64::engine::general_purpose::STANDARD.encode([3_u8; KEK_LEN]);
        let parsed: Kek = text.parse().unwrap();
        assert_eq!(parsed.id(), kek(3).id());
        assert_eq!(parsed.id().len(), 16);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfb_u8; KEK_LEN]);
        assert_eq!(url.parse::<Kek>().unwrap().id(), kek(0xfb).id());
        assert!("short".parse::<Kek>().is_err());
        let sixteen = base64::engine::general_purpose::STANDARD.encode([3_u8; 16]);
        assert!(sixteen.parse::<Kek>().unwrap_err().contains("32 bytes"));
        assert!(
            !format!("{:?}", kek(3)).contains("[3"),
            "Debug shows no key bytes"
        );
    }
}
