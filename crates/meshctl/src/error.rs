//! The one error type of meshctl's library: what went wrong, with enough context to act on.

use std::path::PathBuf;
use std::time::Duration;

/// Everything meshctl's commands can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// Certificates could not be made or loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// Certificate files could not be made or loaded.
    #[error("TLS: {0}")]
    TlsMaterial(#[from] shop_tls::TlsError),
    /// A file or process operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A helper program ran but failed.
    #[error("`{program}` failed: {detail}")]
    Command {
        /// The program (and the gist of its arguments).
        program: String,
        /// Exit status and output.
        detail: String,
    },

    /// A program meshctl needs is missing and could not be installed.
    #[error("{program} is not available: {hint}")]
    NotInstalled {
        /// The missing program.
        program: &'static str,
        /// How to get it.
        hint: String,
    },

    /// A process did not become ready in time or exited while starting.
    #[error("{name} did not become ready ({reason}); last lines of {}:\n{tail}", log.display())]
    NotReady {
        /// The process.
        name: String,
        /// Why the wait ended.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },

    /// A service exited while the mesh was running in the foreground.
    #[error("{name} exited unexpectedly ({status}); last lines of {}:\n{tail}", log.display())]
    Exited {
        /// The service.
        name: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },

    /// The background supervisor of `up --detach` exited before the mesh was running.
    #[error("the supervisor exited ({status}) before the mesh was up; its output is above and in {}", log.display())]
    SupervisorExited {
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
    },

    /// The state file could not be read or written.
    #[error("state file {}: {detail}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// A directory meshctl or the server it runs cannot use; on one line, with the fix.
    #[error("cannot use {}: {reason}; {fix}", dir.display())]
    Unreachable {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// What to do about it.
        fix: String,
    },

    /// `up` found a mesh that is still running.
    #[error("a mesh is already running (state in {}); run `meshctl down` first", .0.display())]
    AlreadyRunning(PathBuf),

    /// A command that needs a running mesh found none.
    #[error("no mesh is running (no {}); start one with `meshctl up --detach`", .0.display())]
    NotRunning(PathBuf),

    /// A command-line value could not be parsed.
    #[error("{0}")]
    Usage(String),

    /// The identity key-encryption key file is not usable.
    #[error("key-encryption key: {0}")]
    Kek(String),

    /// The demo needs a service the running mesh does not have.
    #[error("the running mesh has no {0} service")]
    MissingService(&'static str),

    /// A demo order did not end as it should have.
    #[error("demo orders did not end as expected: {0}")]
    UnexpectedOrders(String),

    /// A load worker task panicked or was cancelled.
    #[error("load worker failed: {0}")]
    Worker(String),

    /// A PostgreSQL statement failed.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),

    /// A gRPC connection could not be made.
    #[error("connecting to {addr}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why it failed.
        #[source]
        source: tonic::transport::Error,
    },

    /// A gRPC call failed.
    #[error("{call} failed: {status}")]
    Rpc {
        /// The call, e.g. `IdentityService/Register`.
        call: &'static str,
        /// The status returned (boxed: it is large).
        status: Box<tonic::Status>,
    },

    /// A NATS or JetStream request failed.
    #[error("NATS: {what}: {detail}")]
    Nats {
        /// What was asked.
        what: String,
        /// The client's error.
        detail: String,
    },

    /// A polled condition did not hold in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// The condition.
        what: String,
        /// How long was waited.
        after: Duration,
    },

    /// Ctrl-C or SIGTERM arrived while the mesh was starting.
    #[error("interrupted while starting; everything started so far was stopped")]
    Interrupted,
}

/// `Result` with [`MeshError`].
pub type Result<T, E = MeshError> = std::result::Result<T, E>;

/// Attaches a description to an `io::Result`.
pub(crate) trait IoContext<T> {
    /// Wraps the error with `context()` (called only on error).
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| MeshError::Io {
            context: context(),
            source,
        })
    }
}

impl MeshError {
    /// This error and its causes on one line, `outer: inner: ...`.
    #[must_use]
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    /// A failed NATS request.
    pub(crate) fn nats(what: String, err: impl std::fmt::Display) -> Self {
        Self::Nats {
            what,
            detail: err.to_string(),
        }
    }

    /// A failed gRPC call.
    pub(crate) fn rpc(call: &'static str, status: tonic::Status) -> Self {
        Self::Rpc {
            call,
            status: Box::new(status),
        }
    }
}
