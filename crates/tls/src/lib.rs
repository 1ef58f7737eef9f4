//! Mutual TLS for the mesh, so a caller's identity is a fact of the connection rather than a
//! claim in a header.
//!
//! - [`ServiceIdentity`]: who a certificate names, in SPIFFE form
//!   (`spiffe://shop.local/ns/shop/sa/orders`), the form Kubernetes service accounts,
//!   cert-manager and sidecar meshes use.
//! - [`MeshTls`]: a party's certificate, key and trusted CAs from PEM files, re-read when the
//!   files change ([`MeshTls::watch`]), so rotation needs no restart.
//! - [`incoming`]: the listener side for tonic's `serve_with_incoming`; every request carries a
//!   [`PeerInfo`] (peer address and verified identity) in its extensions, plaintext or TLS.
//! - [`MtlsConnector`]: the dialling side for tonic channels; it presents the party's
//!   certificate and accepts only the expected service's.
//! - `issuer` (feature `issuer`): a local CA issuing service certificates, for `meshctl` and
//!   tests.
//!
//! TLS 1.3 only, rustls on the ring provider. A client certificate is optional at the
//! handshake (anonymous callers such as a user behind the gateway still connect, and the
//! authorization layer decides what they may call); one that is presented must chain to the CA.

mod client;
mod error;
mod identity;
#[cfg(feature = "issuer")]
pub mod issuer;
mod material;
mod peer;
mod server;
mod verify;

pub use client::MtlsConnector;
pub use error::TlsError;
pub use identity::{DEFAULT_NAMESPACE, DEFAULT_TRUST_DOMAIN, NotAServiceIdentity, ServiceIdentity};
pub use material::{MeshTls, TlsFiles};
pub use peer::PeerInfo;
pub use server::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES, ServerConnection, incoming};
