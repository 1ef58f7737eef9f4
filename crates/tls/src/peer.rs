//! What a server knows about the other end of a connection.

use std::net::SocketAddr;

use rustls_pki_types::CertificateDer;

use crate::ServiceIdentity;

/// Put in every request's extensions by the listener ([`crate::incoming`]): the peer's address
/// and, for a TLS peer that presented a certificate chaining to the CA, its service identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's socket address.
    pub remote_addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The verified service identity of the peer's certificate; `None` for plaintext and for
    /// TLS peers without a certificate (anonymous).
    pub identity: Option<ServiceIdentity>,
}

impl PeerInfo {
    /// The peer of a request, as the listener recorded it.
    #[must_use]
    pub fn of<B>(request: &http::Request<B>) -> Option<&Self> {
        request.extensions().get::<Self>()
    }
}

/// The SPIFFE service identity in `cert`'s URI subject alternative names, if it has exactly
/// one (a certificate naming two identities names none).
pub(crate) fn identity_of(cert: &CertificateDer<'_>) -> Option<ServiceIdentity> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut ids = parsed
        .valid_uri_names()
        .filter(|uri| uri.starts_with("spiffe://"))
        .map(ServiceIdentity::parse);
    match (ids.next(), ids.next()) {
        (Some(Ok(id)), None) => Some(id),
        _ => None,
    }
}
