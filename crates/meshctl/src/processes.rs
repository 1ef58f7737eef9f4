//! Process plumbing without `unsafe`: liveness, signals (rustix) and log files come from
//! `shop-localinfra`, with its errors as meshctl's; starting the mesh's long-running
//! processes and visible commands (builds, installs) is meshctl's own.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use shop_localinfra::LocalInfraError;
pub use shop_localinfra::process::{is_root, log_tail};
pub use shop_localinfra::signal::{Signal, is_alive, is_running, terminate_all, wait_gone};
use tokio::process::{Child, Command};

use crate::error::{IoContext as _, MeshError, Result};

impl From<LocalInfraError> for MeshError {
    fn from(err: LocalInfraError) -> Self {
        match err {
            LocalInfraError::Io { context, source } => Self::Io { context, source },
            LocalInfraError::Command { program, detail } => Self::Command { program, detail },
            LocalInfraError::NoSuchUser(user) => Self::NotInstalled {
                program: "the postgres system user",
                hint: format!(
                    "no user {user:?} in /etc/passwd; PostgreSQL refuses to run as root and \
                     its package creates that user (apt-get install postgresql)"
                ),
            },
        }
    }
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: Signal) -> Result<()> {
    Ok(shop_localinfra::signal::send(pid, signal)?)
}

/// SIGTERM, then up to `grace` for the process to exit, then SIGKILL. Returns whether it
/// stopped gracefully.
pub async fn terminate(pid: u32, grace: Duration) -> Result<bool> {
    Ok(shop_localinfra::signal::terminate(pid, grace).await?)
}

/// Runs a short command to completion; fails with its output unless it succeeds.
pub async fn run_checked(cmd: &mut Command, program: &str) -> Result<String> {
    Ok(shop_localinfra::process::run_checked(cmd, program).await?)
}

/// Starts a long-running process with output appended to `log`.
///
/// It gets its own process group, so a Ctrl-C at the terminal reaches only meshctl (which then
/// stops everything in order), and it keeps running when meshctl exits (`up --detach`).
pub fn spawn_logged(cmd: &mut Command, log: &Path, what: &str) -> Result<Child> {
    let (stdout, stderr) = shop_localinfra::process::log_stdio(log)?;
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .context(|| format!("start {what}"))
}

/// Runs a command with the terminal as its output (builds, installs); fails unless it succeeds.
pub async fn run_visible(cmd: &mut Command, program: &str) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .context(|| format!("run {program}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(MeshError::Command {
            program: program.to_owned(),
            detail: status.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_recognised() {
        let me = std::process::id();
        assert!(is_alive(me));
        let exe = std::env::current_exe().unwrap();
        assert!(is_running(me, &exe));
        assert!(!is_running(me, Path::new("/usr/bin/something-else")));
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&log, 2), "b\nc");
        assert!(log_tail(&dir.path().join("missing"), 2).contains("cannot read"));
    }

    #[tokio::test]
    async fn terminate_stops_a_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_logged(
            Command::new("sleep").arg("30"),
            &dir.path().join("sleep.log"),
            "sleep",
        )
        .unwrap();
        let pid = child.id().unwrap();
        assert!(is_alive(pid));
        let reap = tokio::spawn(async move { child.wait().await });
        assert!(terminate(pid, Duration::from_secs(5)).await.unwrap());
        assert!(!reap.await.unwrap().unwrap().success());
        assert!(!is_alive(pid));
    }
}
