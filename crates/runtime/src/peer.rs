//! Who is calling, as the listener established it (never as the request claims).
//!
//! Every request carries a [`PeerInfo`] in its extensions: the peer's address and, over mutual
//! TLS, the verified service identity of its certificate.

use std::net::IpAddr;

pub use shop_tls::{PeerInfo, ServiceIdentity};

/// The peer of `request`, if it came through the kit's listener.
#[must_use]
pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

/// The peer's IP address.
#[must_use]
pub fn remote_ip<T>(request: &tonic::Request<T>) -> Option<IpAddr> {
    of(request)
        .and_then(|peer| peer.remote_addr)
        .or_else(|| request.remote_addr())
        .map(|addr| addr.ip())
}

/// The verified service identity of the caller's certificate.
#[must_use]
pub fn service_identity<T>(request: &tonic::Request<T>) -> Option<&ServiceIdentity> {
    of(request).and_then(|peer| peer.identity.as_ref())
}
