//! Verifying the server a connection reaches: its chain must lead to the mesh's CA and its
//! certificate must name the expected service identity.
//!
//! Written here because rustls' `WebPkiServerVerifier` matches the DNS name or IP address the
//! client dialled, and a SPIFFE certificate (what cert-manager's CSI driver, a sidecar mesh or
//! `meshctl` issue) names a service by URI, independent of the address: the same `catalog`
//! identity answers at `127.0.0.1:50052` and behind `catalog.shop.svc`. Chain building and the
//! handshake signatures are still rustls' and webpki's own code.

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    server::ParsedCertificate,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{ServiceIdentity, peer};

/// Accepts a server certificate that chains to `roots` and names `expected`.
#[derive(Debug)]
pub(crate) struct ExpectIdentity {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) provider: Arc<CryptoProvider>,
    pub(crate) expected: ServiceIdentity,
}

impl ServerCertVerifier for ExpectIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match peer::identity_of(end_entity) {
            Some(identity) if identity == self.expected => Ok(ServerCertVerified::assertion()),
            found => Err(Error::General(format!(
                "server certificate names {}, expected {}",
                found.map_or_else(|| "no service identity".to_owned(), |id| id.to_string()),
                self.expected
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
