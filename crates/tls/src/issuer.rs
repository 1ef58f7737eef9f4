//! A local certificate authority: what `meshctl up` and the tests use to give every service a
//! certificate. In Kubernetes cert-manager plays this part (`k8s/base/certificates.yaml`).
//!
//! ECDSA P-256 keys; leaves carry their SPIFFE identity as a URI SAN plus the DNS names and IP
//! addresses tools dial (`grpcurl` checks those), and may serve and dial (both EKUs).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::{ServiceIdentity, TlsError, TlsFiles};

/// How long `meshctl`'s certificates are valid.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// A CA's certificate and key.
pub struct LocalCa {
    name: String,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").finish_non_exhaustive()
    }
}

fn issue_error(err: impl std::fmt::Display) -> TlsError {
    TlsError::Issue(err.to_string())
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "shop mesh");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for clocks a little behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + valid_for;
}

impl LocalCa {
    /// A new CA called `name`, valid for ten years.
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(issue_error)?;
        let mut params = ca_params(name);
        validity(&mut params, Duration::from_secs(10 * 365 * 24 * 3600));
        let cert = params.self_signed(&key).map_err(issue_error)?;
        Ok(Self {
            name: name.to_owned(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA `generate(name)` made earlier, from its certificate and key.
    ///
    /// The issuer is rebuilt from the same name and key, which is all a signature and the
    /// authority key identifier depend on.
    pub fn from_pem(name: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(issue_error)?;
        Ok(Self {
            name: name.to_owned(),
            cert_pem: cert_pem.to_owned(),
            issuer: Issuer::new(ca_params(name), key),
        })
    }

    /// The CA certificate (what every party trusts).
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key.
    #[must_use]
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for `identity`, also valid for `names` (DNS names or IP addresses).
    pub fn issue(
        &self,
        identity: &ServiceIdentity,
        names: &[&str],
        valid_for: Duration,
    ) -> Result<IssuedCert, TlsError> {
        let key = KeyPair::generate().map_err(issue_error)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.service());
        params.distinguished_name = dn;
        let uri = identity.to_string().try_into().map_err(issue_error)?;
        params.subject_alt_names.push(SanType::URI(uri));
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().map_err(issue_error)?),
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, valid_for);
        let cert = params.signed_by(&key, &self.issuer).map_err(issue_error)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `issued` as `<dir>/<stem>.crt` and `<dir>/<stem>.key` (owner-only) and this CA's
    /// certificate as `<dir>/ca.crt`; returns the paths. Each file is written to a temporary
    /// name and renamed, so a reader never sees half a file.
    pub fn write(&self, issued: &IssuedCert, dir: &Path, stem: &str) -> Result<TlsFiles, TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let files = TlsFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
            ca: dir.join("ca.crt"),
        };
        write_atomically(&files.key, &issued.key_pem, true)?;
        write_atomically(&files.cert, &issued.cert_pem, false)?;
        write_atomically(&files.ca, &self.cert_pem, false)?;
        Ok(files)
    }
}

fn write_atomically(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let error = |path: PathBuf| move |source| TlsError::Write { path, source };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(error(tmp.clone()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(error(tmp.clone()))?;
    std::fs::rename(&tmp, path).map_err(error(path.to_owned()))
}
