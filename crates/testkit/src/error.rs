//! The one error type of the test kit.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias used by every public function of the test kit.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, stopping or polling test infrastructure.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// Certificates could not be issued or loaded.
    #[error(transparent)]
    Tls(#[from] shop_tls::TlsError),
    /// A required program (postgres, nats-server) is not installed; `hint` says how to install it.
    #[error("{program} not found: {hint}")]
    NotInstalled {
        /// The program that was looked for.
        program: &'static str,
        /// How to install it.
        hint: String,
    },
    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
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
    /// A server process exited or never became ready; `tail` is the end of its log.
    #[error("{process} did not start: {reason}\n--- last lines of {} ---\n{tail}", log.display())]
    Startup {
        /// Which server.
        process: &'static str,
        /// Why it is considered failed.
        reason: String,
        /// The server's log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A polled condition did not hold within the time allowed.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long was waited.
        after: Duration,
    },
    /// A database statement or connection failed.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// A database name that is not a plain lower-case identifier.
    #[error(
        "invalid database name {0:?}: use 1-63 characters of [a-z0-9_], not starting with a digit"
    )]
    InvalidDatabaseName(String),
    /// The operation needs a running server, but it is stopped.
    #[error("{0} is not running")]
    NotRunning(&'static str),
    /// A server answered something the test kit could not understand.
    #[error("unexpected answer from {what}: {detail}")]
    Protocol {
        /// Who answered.
        what: String,
        /// What was wrong with the answer.
        detail: String,
    },
}

/// Attaches a description of the failed operation to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| TestkitError::Io {
            context: context(),
            source,
        })
    }
}
