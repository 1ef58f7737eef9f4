//! A tonic interceptor that admits only calls bearing a valid access token.
//!
//! ```ignore
//! let auth = shop_auth::RequireBearer::new(Arc::new(verifier));
//! let service = OrderServiceServer::with_interceptor(orders, auth);
//! // in a handler:
//! let claims = request.extensions().get::<shop_auth::Claims>();
//! ```

use std::sync::Arc;

use tonic::{Request, Status, service::Interceptor};

use crate::{Claims, JwtVerifier};

/// Verifies `authorization: Bearer <token>` and puts the token's [`Claims`] in the request's
/// extensions; anything else is `UNAUTHENTICATED` before the handler runs.
#[derive(Debug, Clone)]
pub struct RequireBearer {
    verifier: Arc<JwtVerifier>,
}

impl RequireBearer {
    /// An interceptor trusting `verifier`'s keys, issuer and audience.
    #[must_use]
    pub fn new(verifier: Arc<JwtVerifier>) -> Self {
        Self { verifier }
    }

    fn claims<T>(&self, request: &Request<T>) -> Result<Claims, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let value = header
            .to_str()
            .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization is not a bearer token"))?;
        self.verifier.verify(token.trim()).map_err(|err| {
            // The reason (expired, wrong audience, ...) helps the caller and reveals nothing.
            Status::unauthenticated(err.to_string())
        })
    }
}

impl Interceptor for RequireBearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let claims = self.claims(&request)?;
        request.extensions_mut().insert(claims);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ed25519_dalek::SigningKey;
    use tonic::Code;

    use super::*;
    use crate::JwtSigner;

    fn setup() -> (JwtSigner, RequireBearer) {
        let signer = JwtSigner::new(
            "k1".into(),
            SigningKey::from_bytes(&[7; 32]),
            "shop-identity".into(),
            "shop".into(),
            Duration::from_secs(60),
        );
        let verifier =
            JwtVerifier::new(&[signer.jwk()], "shop-identity".into(), "shop".into()).unwrap();
        (signer, RequireBearer::new(Arc::new(verifier)))
    }

    fn with_header(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
        request
    }

    #[test]
    fn a_valid_token_passes_with_its_claims() {
        let (signer, mut auth) = setup();
        let (token, _) = signer.issue("user-1", None).unwrap();
        let request = auth.call(with_header(&format!("Bearer {token}"))).unwrap();
        assert_eq!(request.extensions().get::<Claims>().unwrap().sub, "user-1");
    }

    #[test]
    fn anything_else_is_unauthenticated() {
        let (signer, mut auth) = setup();
        let (token, _) = signer.issue("user-1", None).unwrap();
        let tampered = format!("Bearer {token}x");
        for request in [
            Request::new(()),
            with_header(&format!("Basic {token}")),
            with_header(&tampered),
            with_header("Bearer not.a.jwt"),
        ] {
            assert_eq!(
                auth.call(request).unwrap_err().code(),
                Code::Unauthenticated
            );
        }
    }
}
