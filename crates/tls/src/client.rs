//! The dialling side: a connector for tonic channels that makes each new connection a mutual
//! TLS session with the current material and accepts only the expected service's certificate.
//!
//! ```ignore
//! let connector = shop_tls::MtlsConnector::new(tls.clone(), tls.identity().with_service("catalog")?);
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50052")
//!     .connect_with_connector_lazy(connector);
//! ```
//!
//! The URI keeps the `http` scheme: TLS is this connector's business, so tonic's own TLS
//! (and its feature flags) stays out of the build.

use std::{future::Future, io, pin::Pin, sync::Arc, task::Poll};

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, sign::SingleCertAndKey};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::{MeshTls, ServiceIdentity, TlsError, material::ALPN_H2, verify::ExpectIdentity};

/// Makes mTLS connections to the service `expected`.
#[derive(Debug, Clone)]
pub struct MtlsConnector {
    tls: MeshTls,
    expected: ServiceIdentity,
}

/// Two connectors are the same when they present the same files and expect the same server.
impl PartialEq for MtlsConnector {
    fn eq(&self, other: &Self) -> bool {
        self.expected == other.expected && self.tls.files() == other.tls.files()
    }
}

impl MtlsConnector {
    /// Connections presenting `tls`'s certificate, to a server that must prove it is
    /// `expected`.
    #[must_use]
    pub fn new(tls: MeshTls, expected: ServiceIdentity) -> Self {
        Self { tls, expected }
    }

    /// The identity the server must present.
    #[must_use]
    pub fn expected(&self) -> &ServiceIdentity {
        &self.expected
    }

    /// The client configuration for the next connection (current material).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let loaded = self.tls.current();
        let provider = Arc::clone(self.tls.provider());
        let verifier = Arc::new(ExpectIdentity {
            roots: Arc::clone(&loaded.roots),
            provider: Arc::clone(&provider),
            expected: self.expected.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|source| TlsError::Rustls {
                context: "client protocol versions".into(),
                source,
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(&loaded.key))));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    /// Connects to `host:port` and completes the handshake.
    pub async fn connect(&self, host: &str, port: u16) -> io::Result<TlsStream<TcpStream>> {
        let config = self.client_config().map_err(io::Error::other)?;
        // Sent as SNI only; the certificate is checked against `expected`, not this name.
        let server_name = ServerName::try_from(self.expected.service().to_owned())
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        TlsConnector::from(config).connect(server_name, tcp).await
    }
}

impl tower_service::Service<http::Uri> for MtlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI without a host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            connector.connect(&host, port).await.map(TokioIo::new)
        })
    }
}
