//! A throwaway certificate authority for mutual TLS tests: one CA per [`TestPki`], service
//! certificates on demand, all in a temp dir deleted on drop.

use std::path::{Path, PathBuf};

use shop_tls::{
    MeshTls, MtlsConnector, ServiceIdentity, TlsFiles,
    issuer::{DEFAULT_VALIDITY, LocalCa},
};

use crate::Result;

/// A CA and the certificates it issued.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: LocalCa,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// A new CA.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|source| crate::TestkitError::Io {
            context: "creating a temp dir for certificates".into(),
            source,
        })?;
        Ok(Self {
            dir,
            ca: LocalCa::generate("shop test CA")?,
        })
    }

    /// The directory the files are written in.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA.
    #[must_use]
    pub fn ca(&self) -> &LocalCa {
        &self.ca
    }

    /// A certificate for `service` (`spiffe://shop.local/ns/shop/sa/<service>`, also valid for
    /// `localhost` and 127.0.0.1), written under its own directory.
    pub fn issue(&self, service: &str) -> Result<TlsFiles> {
        let identity =
            ServiceIdentity::shop(service).map_err(|err| crate::TestkitError::Command {
                program: "TestPki::issue".into(),
                detail: err.to_string(),
            })?;
        let issued = self
            .ca
            .issue(&identity, &["localhost", "127.0.0.1"], DEFAULT_VALIDITY)?;
        Ok(self
            .ca
            .write(&issued, &self.service_dir(service), service)?)
    }

    /// `service`'s loaded material (issuing it first).
    pub fn material(&self, service: &str) -> Result<MeshTls> {
        Ok(MeshTls::load(self.issue(service)?)?)
    }

    /// A connector presenting `caller`'s certificate to the service `server`.
    pub fn connector(&self, caller: &str, server: &str) -> Result<MtlsConnector> {
        let tls = self.material(caller)?;
        let expected =
            tls.identity()
                .with_service(server)
                .ok_or_else(|| crate::TestkitError::Command {
                    program: "TestPki::connector".into(),
                    detail: format!("{server:?} is not a service name"),
                })?;
        Ok(MtlsConnector::new(tls, expected))
    }

    fn service_dir(&self, service: &str) -> PathBuf {
        self.dir.path().join(service)
    }
}

/// A connector for tonic channels that speaks TLS, trusting `pki`'s CA, but presents no
/// certificate: an anonymous caller (a probe, a user without a service identity).
#[derive(Clone)]
pub struct AnonymousConnector {
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for AnonymousConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnonymousConnector").finish_non_exhaustive()
    }
}

impl TestPki {
    /// See [`AnonymousConnector`].
    pub fn anonymous_connector(&self) -> Result<AnonymousConnector> {
        use rustls_pki_types::pem::PemObject as _;
        let bad = |detail: String| crate::TestkitError::Command {
            program: "TestPki::anonymous_connector".into(),
            detail,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(self.ca.cert_pem().as_bytes())
        {
            let cert = cert.map_err(|err| bad(err.to_string()))?;
            roots.add(cert).map_err(|err| bad(err.to_string()))?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|err| bad(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(AnonymousConnector {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        })
    }
}

impl tower_service::Service<http::Uri> for AnonymousConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.connector.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or("localhost").to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let name = rustls_pki_types::ServerName::try_from("localhost")
                .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))?;
            let tls = connector.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}
