//! The process plumbing of `shop-localinfra`, with its errors as the test kit's.

use std::path::Path;
use std::time::Duration;

use shop_localinfra::LocalInfraError;
pub(crate) use shop_localinfra::RunAs;
pub(crate) use shop_localinfra::process::{block_until_exit, is_executable, log_tail, run_as};
use tokio::process::{Child, Command};

use crate::error::{Result, TestkitError};

impl From<LocalInfraError> for TestkitError {
    fn from(err: LocalInfraError) -> Self {
        match err {
            LocalInfraError::Io { context, source } => Self::Io { context, source },
            LocalInfraError::Command { program, detail } => Self::Command { program, detail },
            LocalInfraError::NoSuchUser(user) => Self::NotInstalled {
                program: "system user for the server (running as root)",
                hint: format!("no user {user:?} in /etc/passwd"),
            },
        }
    }
}

/// `None` when this process is not root, else the uid/gid of `user`; `hint` says how to get
/// the user (it comes with the server's package).
pub(crate) fn run_as_unless_root(user: &str, hint: &str) -> Result<Option<RunAs>> {
    RunAs::unless_root(user).map_err(|err| match TestkitError::from(err) {
        TestkitError::NotInstalled {
            program,
            hint: missing,
        } => TestkitError::NotInstalled {
            program,
            hint: format!("{missing}; {hint}"),
        },
        other => other,
    })
}

/// Opens (appending) the log file and returns stdout and stderr handles that write to it.
pub(crate) fn log_stdio(log: &Path) -> Result<(std::process::Stdio, std::process::Stdio)> {
    Ok(shop_localinfra::process::log_stdio(log)?)
}

/// Runs a short helper command to completion and fails with its output if it fails.
pub(crate) async fn run_checked(cmd: &mut Command, program: &str) -> Result<String> {
    Ok(shop_localinfra::process::run_checked(cmd, program).await?)
}

/// Waits up to `timeout` for `child` to exit; kills it (SIGKILL) if it does not.
pub(crate) async fn wait_exit(child: &mut Child, timeout: Duration, what: &str) -> Result<()> {
    Ok(shop_localinfra::process::wait_exit(child, timeout, what).await?)
}
