//! A party's TLS material (its certificate chain, key and the CAs it trusts), read from PEM
//! files and re-read when they change, so a rotated certificate is used without a restart.
//!
//! Rotation is by polling: [`MeshTls::watch`] reads the three files every interval and reloads
//! when their bytes differ from what is in use. Polling works the same for a file `meshctl`
//! rewrites and for a Kubernetes Secret volume (whose files change by an atomic symlink swap),
//! needs no inotify dependency, and costs reading a few kilobytes a second; comparing contents
//! rather than modification times also catches two writes within one timestamp tick. A reload that fails (a cert
//! written before its key, a broken file) keeps the material in use and tries again next tick.
//! New connections use the new material; open connections keep the session they negotiated.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    server::WebPkiClientVerifier,
    sign::{CertifiedKey, SingleCertAndKey},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_util::sync::CancellationToken;

use crate::{ServiceIdentity, TlsError, peer};

/// The ALPN protocol gRPC speaks.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// Where a party's certificate chain, private key and trusted CA bundle are (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The CA certificates peers' chains must lead to.
    pub ca: PathBuf,
}

/// One party's TLS material, shared by its listener and its outgoing connections.
#[derive(Clone)]
pub struct MeshTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
    /// The contents the last failed reload saw, so broken files are reported once.
    failed: Mutex<Option<Stamp>>,
}

/// What one read of the files produced.
pub(crate) struct Loaded {
    pub(crate) identity: ServiceIdentity,
    pub(crate) key: Arc<CertifiedKey>,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) server: Arc<ServerConfig>,
    stamp: Stamp,
}

/// The bytes of the certificate, key and CA files the material was built from.
type Stamp = [Vec<u8>; 3];

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls")
            .field("files", &self.inner.files)
            .field("identity", &self.current().identity.to_string())
            .finish_non_exhaustive()
    }
}

impl MeshTls {
    /// Reads `files`; the leaf certificate must carry a SPIFFE service identity
    /// ([`ServiceIdentity`]) and chain to one of the CAs.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = load(&files, read_all(&files)?, &provider)?;
        Ok(Self {
            inner: Arc::new(Inner {
                files,
                provider,
                current: RwLock::new(Arc::new(loaded)),
                failed: Mutex::new(None),
            }),
        })
    }

    /// Whose certificate this is.
    #[must_use]
    pub fn identity(&self) -> ServiceIdentity {
        self.current().identity.clone()
    }

    /// The files this material comes from.
    #[must_use]
    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// The server configuration new connections are accepted with.
    #[must_use]
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current().server)
    }

    pub(crate) fn current(&self) -> Arc<Loaded> {
        Arc::clone(
            &self
                .inner
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    pub(crate) fn provider(&self) -> &Arc<CryptoProvider> {
        &self.inner.provider
    }

    /// Re-reads the files if any changed since the last read: `Ok(true)` when new material is
    /// in use, `Ok(false)` when nothing changed (or the same broken contents were already
    /// reported); on an error the old material stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = read_all(&self.inner.files)?;
        let mut failed = self
            .inner
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if stamp == self.current().stamp || failed.as_ref() == Some(&stamp) {
            return Ok(false);
        }
        let loaded = match load(&self.inner.files, stamp.clone(), &self.inner.provider) {
            Ok(loaded) => loaded,
            Err(error) => {
                *failed = Some(stamp);
                return Err(error);
            }
        };
        *failed = None;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        Ok(true)
    }

    /// Polls the files every `interval` until `stop`, reloading on a change.
    pub fn watch(
        &self,
        interval: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match tls.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(identity = %tls.identity(), "TLS certificate reloaded");
                    }
                    Ok(false) => {}
                    Err(error) => tracing::warn!(
                        %error,
                        "TLS files changed but cannot be loaded; keeping the certificate in use"
                    ),
                }
            }
        })
    }
}

fn read_all(files: &TlsFiles) -> Result<Stamp, TlsError> {
    Ok([read(&files.cert)?, read(&files.key)?, read(&files.ca)?])
}

fn load(
    files: &TlsFiles,
    stamp: Stamp,
    provider: &Arc<CryptoProvider>,
) -> Result<Loaded, TlsError> {
    let [cert_pem, key_pem, ca_pem] = &stamp;
    let chain = parse_certs(&files.cert, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| TlsError::Pem {
        path: files.key.clone(),
        reason: err.to_string(),
    })?;
    let cas = parse_certs(&files.ca, ca_pem)?;

    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|source| TlsError::Rustls {
            context: format!("CA certificate in {}", files.ca.display()),
            source,
        })?;
    }
    let roots = Arc::new(roots);
    let identity = chain
        .first()
        .and_then(peer::identity_of)
        .ok_or_else(|| TlsError::NoIdentity(files.cert.clone()))?;
    let key = Arc::new(
        CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Rustls {
            context: format!(
                "key {} for certificate {}",
                files.key.display(),
                files.cert.display()
            ),
            source,
        })?,
    );

    // A client certificate is optional at the handshake: a call without one (a user's
    // browser through the gateway, grpcurl with a token) is anonymous and the authorization
    // layer decides; a certificate that is presented must chain to the CA.
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(provider))
            .allow_unauthenticated()
            .build()
            .map_err(|err| TlsError::Config(err.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls {
            context: "server protocol versions".into(),
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(&key))));
    server.alpn_protocols = vec![ALPN_H2.to_vec()];

    Ok(Loaded {
        identity,
        key,
        roots,
        server: Arc::new(server),
        stamp,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}
