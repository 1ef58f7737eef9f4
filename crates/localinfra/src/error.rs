//! The one error type of the crate; meshctl and the test kit map it onto their own.

/// `Result` with [`LocalInfraError`].
pub type Result<T, E = LocalInfraError> = std::result::Result<T, E>;

/// What can go wrong while running or finding local infrastructure.
#[derive(Debug, thiserror::Error)]
pub enum LocalInfraError {
    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A helper program ran but reported failure.
    #[error("{program} failed: {detail}")]
    Command {
        /// The program that failed.
        program: String,
        /// Its exit status and output.
        detail: String,
    },
    /// A system user a server must run as does not exist.
    #[error("no user {0:?} in /etc/passwd")]
    NoSuchUser(String),
}

/// Attaches a description of the failed operation to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| LocalInfraError::Io {
            context: context(),
            source,
        })
    }
}
