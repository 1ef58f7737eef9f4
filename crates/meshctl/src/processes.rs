//! Process plumbing without `unsafe`: /proc for liveness and identity, the `kill` command for
//! signals, log files for output.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::{IoContext as _, MeshError, Result};

/// Poll interval while waiting for a process to exit.
const EXIT_POLL: Duration = Duration::from_millis(50);

/// Whether this process runs as root (effective uid 0, read from /proc).
#[must_use]
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Whether `pid` is a live process (a zombie counts as gone: it only waits to be reaped).
#[must_use]
pub fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')' (comm may contain anything).
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Whether `pid` is alive and runs `binary` (guards against signalling a reused pid).
#[must_use]
pub fn is_running(pid: u32, binary: &Path) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = Path::new(std::str::from_utf8(argv0).unwrap_or_default());
    argv0.file_name().is_some() && argv0.file_name() == binary.file_name()
}

/// Sends `signal` (`TERM`, `KILL`, ...) to `pid` with the `kill` command.
pub async fn signal(pid: u32, signal: &str) -> Result<()> {
    let mut cmd = Command::new("kill");
    cmd.args(["-s", signal, &pid.to_string()]);
    run_checked(&mut cmd, "kill").await.map(drop)
}

/// Polls until `pid` is gone; `false` if it still runs after `timeout`.
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while is_alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
    true
}

/// SIGTERM, then up to `grace` for the process to exit, then SIGKILL. Returns whether it
/// stopped gracefully.
pub async fn terminate(pid: u32, grace: Duration) -> Result<bool> {
    if !is_alive(pid) {
        return Ok(true);
    }
    // The process may exit between the check and the signal: then `kill` fails harmlessly.
    if signal(pid, "TERM").await.is_err() && !is_alive(pid) {
        return Ok(true);
    }
    if wait_gone(pid, grace).await {
        return Ok(true);
    }
    let _ = signal(pid, "KILL").await;
    wait_gone(pid, Duration::from_secs(5)).await;
    Ok(false)
}

/// SIGTERM to every process of `pids` at once, up to `grace` for all to exit, then SIGKILL
/// for those still running. Returns the pids that had to be killed.
pub async fn terminate_all(pids: &[u32], grace: Duration) -> Vec<u32> {
    for &pid in pids {
        if is_alive(pid) {
            let _ = signal(pid, "TERM").await;
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    let mut killed = Vec::new();
    for &pid in pids {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !wait_gone(pid, left).await {
            let _ = signal(pid, "KILL").await;
            wait_gone(pid, Duration::from_secs(5)).await;
            killed.push(pid);
        }
    }
    killed
}

/// Starts a long-running process with output appended to `log`.
///
/// It gets its own process group, so a Ctrl-C at the terminal reaches only meshctl (which then
/// stops everything in order), and it keeps running when meshctl exits (`up --detach`).
pub fn spawn_logged(cmd: &mut Command, log: &Path, what: &str) -> Result<Child> {
    let (stdout, stderr) = log_stdio(log)?;
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .context(|| format!("start {what}"))
}

/// Opens `log` for appending and returns stdout and stderr handles writing to it.
fn log_stdio(log: &Path) -> Result<(Stdio, Stdio)> {
    let file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .context(|| format!("open {}", log.display()))?;
    let err = file
        .try_clone()
        .context(|| format!("open {}", log.display()))?;
    Ok((Stdio::from(file), Stdio::from(err)))
}

/// The last `lines` lines of `log`, or why it cannot be read.
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

/// Runs a short command to completion; fails with its output unless it succeeds.
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
    Err(MeshError::Command {
        program: program.to_owned(),
        detail: format!(
            "{}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    })
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
