//! Certificates for the local mesh: `up` keeps a CA in `<state dir>/certs` (made once, so a
//! developer's trust in it outlives a restart) and issues every service, and the developer, a
//! fresh certificate on each start. The services get them as `TLS_CERT_FILE`/`TLS_KEY_FILE`/
//! `TLS_CA_FILE`; meshctl's own calls (`status`, `demo`, `check`, ...) present the developer's.

use std::path::{Path, PathBuf};

use shop_tls::{
    ServiceIdentity, TlsFiles,
    issuer::{DEFAULT_VALIDITY, LocalCa},
};

use crate::error::{IoContext as _, MeshError, Result};
use crate::state::ClientTls;

/// The identity of meshctl and of people using grpcurl / buf curl against the local mesh.
pub const DEVELOPER: &str = "developer";

const CA_NAME: &str = "shop mesh local CA";

/// Where the certificates of one state directory are.
#[derive(Debug, Clone)]
pub struct MeshCerts {
    /// The directory.
    pub dir: PathBuf,
}

impl MeshCerts {
    /// The files of `service` (as written by [`ensure`]).
    #[must_use]
    pub fn files(&self, service: &str) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join(format!("{service}.crt")),
            key: self.dir.join(format!("{service}.key")),
            ca: self.dir.join("ca.crt"),
        }
    }

    /// The developer's files, as the state file records them.
    #[must_use]
    pub fn developer(&self) -> ClientTls {
        let files = self.files(DEVELOPER);
        ClientTls {
            cert: files.cert,
            key: files.key,
            ca: files.ca,
        }
    }
}

/// Loads (or creates) the CA in `<state_dir>/certs` and issues a certificate for each of
/// `services` and for the developer.
pub fn ensure(state_dir: &Path, services: &[&str]) -> Result<MeshCerts> {
    let dir = state_dir.join("certs");
    std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
    let (ca_cert, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let ca = if ca_cert.is_file() && ca_key.is_file() {
        let cert =
            std::fs::read_to_string(&ca_cert).context(|| format!("read {}", ca_cert.display()))?;
        let key =
            std::fs::read_to_string(&ca_key).context(|| format!("read {}", ca_key.display()))?;
        LocalCa::from_pem(CA_NAME, &cert, &key)?
    } else {
        let ca = LocalCa::generate(CA_NAME)?;
        write_secret(&ca_key, &ca.key_pem())?;
        std::fs::write(&ca_cert, ca.cert_pem())
            .context(|| format!("write {}", ca_cert.display()))?;
        ca
    };
    for name in services.iter().copied().chain([DEVELOPER]) {
        let identity =
            ServiceIdentity::shop(name).map_err(|err| MeshError::Tls(err.to_string()))?;
        // What tools dial: grpcurl checks the name (localhost) or the address.
        let issued = ca.issue(
            &identity,
            &["localhost", "127.0.0.1", name],
            DEFAULT_VALIDITY,
        )?;
        ca.write(&issued, &dir, name)?;
    }
    Ok(MeshCerts { dir })
}

pub(crate) fn write_secret(path: &Path, contents: &str) -> Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .context(|| format!("write {}", path.display()))
}

/// The commands that call the local mesh with the developer certificate.
#[must_use]
pub fn grpcurl_hint(certs: &MeshCerts, catalog: std::net::SocketAddr) -> String {
    let files = certs.files(DEVELOPER);
    let port = catalog.port();
    format!(
        "mTLS is on (certificates in {dir}). Call a service as the developer:\n  \
         grpcurl -cacert {ca} -cert {cert} -key {key} localhost:{port} list\n  \
         buf curl --cacert {ca} --cert {cert} --key {key} --protocol grpc \
         --list-methods https://localhost:{port}\n\
         (`meshctl up --plaintext` runs without TLS, for debugging.)",
        dir = certs.dir.display(),
        ca = files.ca.display(),
        cert = files.cert.display(),
        key = files.key.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_survives_a_restart_and_leaves_are_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), &["catalog"]).unwrap();
        let ca = std::fs::read(first.dir.join("ca.crt")).unwrap();
        let leaf = std::fs::read(first.files("catalog").cert).unwrap();
        let second = ensure(dir.path(), &["catalog"]).unwrap();
        assert_eq!(std::fs::read(second.dir.join("ca.crt")).unwrap(), ca);
        assert_ne!(std::fs::read(second.files("catalog").cert).unwrap(), leaf);
        // Both chain to the kept CA and name their service.
        let tls = shop_tls::MeshTls::load(second.files("catalog")).unwrap();
        assert_eq!(
            tls.identity().to_string(),
            "spiffe://shop.local/ns/shop/sa/catalog"
        );
        shop_tls::MeshTls::load(second.files(DEVELOPER)).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(second.dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the CA key is the owner's only");
    }
}
