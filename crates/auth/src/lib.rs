//! JSON Web Tokens for the mesh: EdDSA (Ed25519) only.
//!
//! identity issues tokens with a [`JwtSigner`]; every other party checks them with a
//! [`JwtVerifier`] built from identity's JWKS. The algorithm is pinned: a token whose header
//! says anything but `EdDSA` is refused before any key is touched, so `alg: none` and
//! algorithm-confusion attacks have nothing to work with. `exp`, `nbf`, `iss` and `aud` are
//! always checked, with a small leeway for clock skew. [`RequireBearer`] is the tonic
//! interceptor that puts a verified token's [`Claims`] in front of a service's handlers.

mod interceptor;
mod jwk;
mod token;

pub use interceptor::RequireBearer;
pub use jwk::Jwk;
pub use token::{Claims, JwtError, JwtSigner, JwtVerifier};
