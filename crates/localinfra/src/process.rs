//! Short helper commands, log files, and the system user a server runs as.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::{IoContext as _, LocalInfraError, Result};

/// Whether this process runs as root (effective uid 0).
#[must_use]
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A system user that child processes run as (PostgreSQL refuses to run as root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// The user's uid.
    pub uid: u32,
    /// The user's primary gid.
    pub gid: u32,
}

// === impl RunAs ===

impl RunAs {
    /// `None` when this process is not root (children run as whoever runs it), else `user`.
    pub fn unless_root(user: &str) -> Result<Option<Self>> {
        if is_root() {
            Self::lookup(user).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The uid and gid of `user` from /etc/passwd.
    pub fn lookup(user: &str) -> Result<Self> {
        let passwd =
            std::fs::read_to_string("/etc/passwd").context(|| "read /etc/passwd".into())?;
        passwd
            .lines()
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&user))
            .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
            .map(|(uid, gid)| Self { uid, gid })
            .ok_or_else(|| LocalInfraError::NoSuchUser(user.to_owned()))
    }

    /// Makes `cmd` run as this user.
    pub fn apply(self, cmd: &mut Command) {
        cmd.uid(self.uid).gid(self.gid);
    }

    /// Same as [`RunAs::apply`] for a blocking `std` command.
    pub fn apply_std(self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt as _;
        cmd.uid(self.uid).gid(self.gid);
    }

    /// Gives `path` (not recursively) to this user.
    pub fn chown(self, path: &Path) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .context(|| format!("chown {}", path.display()))
    }

    /// Whether this user can reach `dir`: search permission on it and on every directory
    /// above it, as the kernel checks it (ACLs included) with `test -x` run as the user.
    pub async fn can_reach(self, dir: &Path) -> bool {
        let mut cmd = Command::new("test");
        cmd.arg("-x")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.apply(&mut cmd);
        run_checked(&mut cmd, "test -x").await.is_ok()
    }
}

/// Applies `run_as` to `cmd` when it is set.
pub fn run_as(cmd: &mut Command, run_as: Option<RunAs>) {
    if let Some(user) = run_as {
        user.apply(cmd);
    }
}

/// The first executable called `name` on `PATH`.
#[must_use]
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a regular file with an execute bit.
#[must_use]
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Opens `log` for appending and returns stdout and stderr handles writing to it.
pub fn log_stdio(log: &Path) -> Result<(Stdio, Stdio)> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .context(|| format!("open log file {}", log.display()))?;
    let err = file
        .try_clone()
        .context(|| format!("clone log file {}", log.display()))?;
    Ok((Stdio::from(file), Stdio::from(err)))
}

/// The last `lines` lines of `log`, or a note saying why it cannot be read.
#[must_use]
pub fn log_tail(log: &Path, lines: usize) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read the log: {err})"),
    }
}

/// Runs a short helper command to completion; fails with its status and output unless it
/// succeeds. Returns its stdout.
pub async fn run_checked(cmd: &mut Command, program: &str) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context(|| format!("run {program}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    Err(LocalInfraError::Command {
        program: program.to_owned(),
        detail: format!(
            "{}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Waits up to `timeout` for `child` to exit; kills it (SIGKILL) if it does not.
pub async fn wait_exit(child: &mut Child, timeout: Duration, what: &str) -> Result<()> {
    if let Ok(status) = tokio::time::timeout(timeout, child.wait()).await {
        status.context(|| format!("wait for {what} to exit"))?;
        return Ok(());
    }
    tracing::warn!(what, ?timeout, "did not exit in time; killing it");
    child
        .kill()
        .await
        .context(|| format!("kill {what} after timeout"))
}

/// Polls `child`, blocking the thread (for `Drop`), until it exits or `timeout` passes.
/// Returns whether it exited.
pub fn block_until_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if std::time::Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&log, 2), "b\nc");
        assert!(log_tail(&dir.path().join("missing"), 2).contains("cannot read"));
    }

    #[tokio::test]
    async fn run_checked_returns_stdout_or_the_failure() {
        let out = run_checked(Command::new("echo").arg("hi"), "echo")
            .await
            .unwrap();
        assert_eq!(out, "hi\n");
        let err = run_checked(&mut Command::new("false"), "false")
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("false failed: exit status: 1"),
            "{err}"
        );
    }

    #[test]
    fn root_is_in_passwd() {
        assert_eq!(RunAs::lookup("root").unwrap(), RunAs { uid: 0, gid: 0 });
        assert!(matches!(
            RunAs::lookup("no-such-user-here"),
            Err(LocalInfraError::NoSuchUser(_))
        ));
    }
}
