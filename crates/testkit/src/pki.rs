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
