//! JSON Web Tokens for the mesh: EdDSA (Ed25519) only.
//!
//! identity issues tokens with a [`JwtSigner`]; every other party checks them with a
//! [`JwtVerifier`] built from identity's JWKS. The algorithm is pinned: a token whose header
//! says anything but `EdDSA` is refused before any key is touched, so `alg: none` and
//! algorithm-confusion attacks have nothing to work with. `exp`, `nbf`, `iss` and `aud` are
//! always checked, with a small leeway for clock skew.

mod jwk;
mod token;

pub use jwk::Jwk;
pub use token::{Claims, JwtError, JwtSigner, JwtVerifier};
