//! Process plumbing shared by the servers: users, PATH lookup, log files, waiting for exit.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::{IoContext, Result, TestkitError};

/// A system user that child processes run as (PostgreSQL refuses to run as root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl RunAs {
    /// `None` when this process is not root, else the uid/gid of `user` from /etc/passwd.
    pub(crate) fn unless_root(user: &str, hint: &str) -> Result<Option<Self>> {
        if effective_uid()? != 0 {
            return Ok(None);
        }
        let passwd =
            std::fs::read_to_string("/etc/passwd").context(|| "read /etc/passwd".into())?;
        passwd
            .lines()
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&user))
            .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
            .map(|(uid, gid)| Some(Self { uid, gid }))
            .ok_or_else(|| TestkitError::NotInstalled {
                program: "system user for the server (running as root)",
                hint: format!("no user {user:?} in /etc/passwd; {hint}"),
            })
    }

    /// Makes `cmd` run as this user.
    pub(crate) fn apply(self, cmd: &mut Command) {
        cmd.uid(self.uid).gid(self.gid);
    }

    /// Same as [`RunAs::apply`] for a blocking `std` command.
    pub(crate) fn apply_std(self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt as _;
        cmd.uid(self.uid).gid(self.gid);
    }

    /// Gives `path` (not recursively) to this user.
    pub(crate) fn chown(self, path: &Path) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .context(|| format!("chown {}", path.display()))
    }
}

/// Applies `run_as` to `cmd` when it is set.
pub(crate) fn run_as(cmd: &mut Command, run_as: Option<RunAs>) {
    if let Some(user) = run_as {
        user.apply(cmd);
    }
}

/// The effective uid of this process, read from /proc (no `unsafe` needed).
fn effective_uid() -> Result<u32> {
    let status =
        std::fs::read_to_string("/proc/self/status").context(|| "read /proc/self/status".into())?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| TestkitError::Protocol {
            what: "/proc/self/status".into(),
            detail: "no effective uid in the Uid: line".into(),
        })
}

/// The first executable called `name` on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a regular file with an execute bit.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Opens (appending) the log file and returns stdout and stderr handles that write to it.
pub(crate) fn log_stdio(log: &Path) -> Result<(Stdio, Stdio)> {
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

/// The last `lines` lines of a log file (or a note that it cannot be read).
pub(crate) fn log_tail(log: &Path, lines: usize) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read log: {err})"),
    }
}

/// Runs a short helper command to completion and fails with its output if it fails.
pub(crate) async fn run_checked(cmd: &mut Command, program: &str) -> Result<String> {
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
    Err(TestkitError::Command {
        program: program.to_owned(),
        detail: format!(
            "{}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Waits up to `timeout` for `child` to exit; kills it (SIGKILL) if it does not.
pub(crate) async fn wait_exit(child: &mut Child, timeout: Duration, what: &str) -> Result<()> {
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

/// Polls `child` and blocks the thread (for `Drop`) until it exits or `timeout` passes.
pub(crate) fn block_until_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if std::time::Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
