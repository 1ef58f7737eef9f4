//! Why TLS material could not be loaded or issued.

use std::path::PathBuf;

/// A TLS failure, naming the file or step.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The leaf certificate carries no (or more than one) SPIFFE service identity.
    #[error("{0}: the certificate names no spiffe://<trust domain>/ns/<ns>/sa/<service> identity")]
    NoIdentity(PathBuf),
    /// rustls refused the material.
    #[error("{context}: {source}")]
    Rustls {
        /// What was being set up.
        context: String,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// A configuration could not be built.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Issuing a certificate failed.
    #[error("issuing a certificate: {0}")]
    Issue(String),
}
