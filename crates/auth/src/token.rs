//! Compact JWS tokens signed with Ed25519.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::Jwk;

const ALG: &str = "EdDSA";

/// Why a token was refused or could not be made.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("token is malformed")]
    Malformed,
    /// The header names another algorithm.
    #[error("token algorithm {0:?} is not accepted")]
    AlgorithmNotAllowed(String),
    /// No key with the token's `kid`.
    #[error("token key {0:?} is unknown")]
    UnknownKey(String),
    /// The signature does not match.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` is not the expected issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not include the expected audience.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// `typ` names something other than a JWT (e.g. an ID token or a nested JWS).
    #[error("token type {0:?} is not accepted")]
    WrongType(String),
    /// `iat` is in the future.
    #[error("token is issued in the future")]
    IssuedInTheFuture,
    /// A JWK that is not an Ed25519 signing key.
    #[error("key {0:?} is not an Ed25519 signing key")]
    UnsupportedKey(String),
    /// The system clock is before 1970.
    #[error("system clock is before the Unix epoch")]
    Clock,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// The registered claims the mesh uses, plus the user's email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user id.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Unique token id.
    pub jti: String,
    /// The user's email at issue time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Space-separated scopes granted (RFC 8693 `scope`), e.g. `catalog:write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Claims {
    /// Whether the token grants `scope`.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|granted| granted.split(' ').any(|s| s == scope))
    }
}

fn now_secs() -> Result<u64, JwtError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| JwtError::Clock)
}

fn encode_json<T: Serialize>(value: &T) -> Result<String, JwtError> {
    serde_json::to_vec(value)
        .map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
        .map_err(|_| JwtError::Malformed)
}

/// Issues tokens with one Ed25519 key.
#[derive(Clone)]
pub struct JwtSigner {
    kid: String,
    key: SigningKey,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// A signer for tokens from `issuer` to `audience`, valid for `ttl`.
    #[must_use]
    pub fn new(
        kid: String,
        key: SigningKey,
        issuer: String,
        audience: String,
        ttl: Duration,
    ) -> Self {
        Self {
            kid,
            key,
            issuer,
            audience,
            ttl,
        }
    }

    /// The key id in issued tokens.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK.
    #[must_use]
    pub fn jwk(&self) -> Jwk {
        Jwk::from_verifying_key(&self.kid, &self.key.verifying_key())
    }

    /// A token for `subject`, and its expiry in seconds since the epoch.
    pub fn issue(&self, subject: &str, email: Option<&str>) -> Result<(String, u64), JwtError> {
        self.issue_with_scope(subject, email, None)
    }

    /// Like [`Self::issue`], granting `scope` (space-separated scopes).
    pub fn issue_with_scope(
        &self,
        subject: &str,
        email: Option<&str>,
        scope: Option<&str>,
    ) -> Result<(String, u64), JwtError> {
        let now = now_secs()?;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: self.audience.clone(),
            exp: now + self.ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: uuid::Uuid::now_v7().to_string(),
            email: email.map(str::to_owned),
            scope: scope.map(str::to_owned),
        };
        let header = Header {
            alg: ALG.into(),
            typ: Some("JWT".into()),
            kid: Some(self.kid.clone()),
        };
        let signing_input = format!("{}.{}", encode_json(&header)?, encode_json(&claims)?);
        let signature = self.key.sign(signing_input.as_bytes());
        let token = format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        );
        Ok((token, claims.exp))
    }
}

/// Checks tokens against a set of public keys.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    keys: HashMap<String, VerifyingKey>,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl JwtVerifier {
    /// A verifier trusting `keys` for tokens from `issuer` to `audience`.
    pub fn new(keys: &[Jwk], issuer: String, audience: String) -> Result<Self, JwtError> {
        let keys = keys
            .iter()
            .map(|jwk| Ok((jwk.kid.clone(), jwk.verifying_key()?)))
            .collect::<Result<_, JwtError>>()?;
        Ok(Self {
            keys,
            issuer,
            audience,
            leeway: 30,
        })
    }

    /// The claims of `token` if it is signed by a known key and valid now.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        self.verify_at(token, now_secs()?)
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: Header = decode_json(header_b64)?;
        if header.alg != ALG {
            return Err(JwtError::AlgorithmNotAllowed(header.alg));
        }
        // An access token says `JWT` (or nothing); anything else is another kind of token.
        if let Some(typ) = header.typ.filter(|typ| !typ.eq_ignore_ascii_case("JWT")) {
            return Err(JwtError::WrongType(typ));
        }
        let kid = header.kid.unwrap_or_default();
        let key = self.keys.get(&kid).ok_or(JwtError::UnknownKey(kid))?;
        let signature_bytes = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| JwtError::Malformed)?;
        let signature =
            Signature::from_slice(&signature_bytes).map_err(|_| JwtError::BadSignature)?;
        let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
        key.verify(signing_input.as_bytes(), &signature)
            .map_err(|_| JwtError::BadSignature)?;

        let claims: Claims = decode_json(claims_b64)?;
        if claims.exp.saturating_add(self.leeway) <= now {
            return Err(JwtError::Expired);
        }
        if claims.nbf > now.saturating_add(self.leeway) {
            return Err(JwtError::NotYetValid);
        }
        if claims.iat > now.saturating_add(self.leeway) {
            return Err(JwtError::IssuedInTheFuture);
        }
        if claims.iss != self.issuer {
            return Err(JwtError::WrongIssuer);
        }
        if claims.aud != self.audience {
            return Err(JwtError::WrongAudience);
        }
        Ok(claims)
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8) -> JwtSigner {
        JwtSigner::new(
            format!("key-{seed}"),
            SigningKey::from_bytes(&[seed; 32]),
            "shop-identity".into(),
            "shop".into(),
            Duration::from_secs(600),
        )
    }

    fn verifier(signers: &[&JwtSigner]) -> JwtVerifier {
        let keys: Vec<Jwk> = signers.iter().map(|s| s.jwk()).collect();
        JwtVerifier::new(&keys, "shop-identity".into(), "shop".into()).unwrap()
    }

    #[test]
    fn round_trip() {
        let s = signer(1);
        let (token, exp) = s.issue("user-1", Some("a@example.com")).unwrap();
        let claims = verifier(&[&s]).verify(&token).unwrap();
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.exp, exp);
        assert_eq!(claims.email.as_deref(), Some("a@example.com"));
    }

    #[test]
    fn refuses_other_algorithms_and_tampering() {
        let s = signer(1);
        let (token, _) = s.issue("user-1", None).unwrap();
        let v = verifier(&[&s]);
        let parts: Vec<&str> = token.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"key-1"}"#);
        let forged = format!("{none_header}.{}.", parts[1]);
        assert_eq!(
            v.verify(&forged),
            Err(JwtError::AlgorithmNotAllowed("none".into()))
        );
        let other_claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        let tampered = format!("{}.{other_claims}.{}", parts[0], parts[2]);
        assert_eq!(v.verify(&tampered), Err(JwtError::BadSignature));
        assert_eq!(v.verify("a.b"), Err(JwtError::Malformed));
    }

    #[test]
    fn refuses_unknown_keys_expiry_and_wrong_audience() {
        let s1 = signer(1);
        let s2 = signer(2);
        let (token, exp) = s2.issue("u", None).unwrap();
        assert_eq!(
            verifier(&[&s1]).verify(&token),
            Err(JwtError::UnknownKey("key-2".into()))
        );
        let v = verifier(&[&s2]);
        assert_eq!(v.verify_at(&token, exp + 31), Err(JwtError::Expired));
        let mut other = v.clone();
        other.audience = "elsewhere".into();
        assert_eq!(other.verify(&token), Err(JwtError::WrongAudience));
        assert_eq!(
            v.verify_at(&token, exp - 600 - 31),
            Err(JwtError::NotYetValid)
        );
    }

    /// A token signed right, but whose header says it is another kind of token, or whose
    /// `iat` is ahead of the clock.
    #[test]
    fn refuses_other_token_types_and_future_issue_times() {
        let s = signer(1);
        let v = verifier(&[&s]);
        let sign = |header: &str, claims: &str| {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let sig = s.key.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
        };
        let now = now_secs().unwrap();
        let claims = |iat: u64| {
            format!(
                r#"{{"iss":"shop-identity","sub":"u","aud":"shop","exp":{},"nbf":{now},"iat":{iat},"jti":"j"}}"#,
                now + 600
            )
        };
        let id_token = sign(
            r#"{"alg":"EdDSA","typ":"id+jwt","kid":"key-1"}"#,
            &claims(now),
        );
        assert_eq!(
            v.verify(&id_token),
            Err(JwtError::WrongType("id+jwt".into()))
        );
        let future = sign(
            r#"{"alg":"EdDSA","typ":"JWT","kid":"key-1"}"#,
            &claims(now + 3600),
        );
        assert_eq!(v.verify(&future), Err(JwtError::IssuedInTheFuture));
        let fine = sign(r#"{"alg":"EdDSA","kid":"key-1"}"#, &claims(now));
        assert_eq!(v.verify(&fine).unwrap().sub, "u");
    }

    #[test]
    fn scopes_are_granted_by_name() {
        let s = signer(1);
        let (token, _) = s
            .issue_with_scope("u", None, Some("catalog:write inventory:write"))
            .unwrap();
        let claims = verifier(&[&s]).verify(&token).unwrap();
        assert!(claims.has_scope("catalog:write") && claims.has_scope("inventory:write"));
        assert!(!claims.has_scope("catalog") && !claims.has_scope("admin"));
    }
}
