//! RFC 8037 OKP JSON Web Keys for Ed25519 public keys.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::JwtError;

/// A public key as published in a JWKS document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: always `OKP`.
    pub kty: String,
    /// Curve: always `Ed25519`.
    pub crv: String,
    /// Key id, matched against a token's `kid` header.
    pub kid: String,
    /// The public key, base64url without padding.
    pub x: String,
    /// Algorithm: always `EdDSA`.
    pub alg: String,
    /// Use: always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

impl Jwk {
    /// The JWK of `key` under `kid`.
    #[must_use]
    pub fn from_verifying_key(kid: &str, key: &VerifyingKey) -> Self {
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            kid: kid.into(),
            x: URL_SAFE_NO_PAD.encode(key.as_bytes()),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }
    }

    /// The verifying key this JWK describes; refuses anything but an Ed25519 signing key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, JwtError> {
        if self.kty != "OKP" || self.crv != "Ed25519" || self.alg != "EdDSA" || self.use_ != "sig" {
            return Err(JwtError::UnsupportedKey(self.kid.clone()));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(&self.x)
            .map_err(|_| JwtError::UnsupportedKey(self.kid.clone()))?;
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| JwtError::UnsupportedKey(self.kid.clone()))?;
        VerifyingKey::from_bytes(&array).map_err(|_| JwtError::UnsupportedKey(self.kid.clone()))
    }
}
