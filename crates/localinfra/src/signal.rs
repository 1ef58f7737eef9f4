//! Liveness of a pid (from /proc), signals (rustix's `kill`), and stopping a process: SIGTERM,
//! a grace period, then SIGKILL.

use std::path::Path;
use std::time::Duration;

use crate::error::{IoContext as _, Result};

pub use rustix::process::Signal;

/// Poll interval while waiting for a process to exit.
const EXIT_POLL: Duration = Duration::from_millis(50);
/// How long a process may take to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Sends `signal` to `pid`.
pub fn send(pid: u32, signal: Signal) -> Result<()> {
    rustix::process::kill_process(process_id(pid)?, signal)
        .map_err(std::io::Error::from)
        .context(|| format!("send {signal:?} to pid {pid}"))
}

/// `pid` as a process id; 0 (which `kill` reads as "my process group") and values beyond
/// `i32` are refused.
fn process_id(pid: u32) -> Result<rustix::process::Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        .context(|| format!("signal pid {pid}: not a process id"))
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
/// stopped gracefully; fails only for a `pid` that cannot name a process.
pub async fn terminate(pid: u32, grace: Duration) -> Result<bool> {
    process_id(pid)?;
    if !is_alive(pid) {
        return Ok(true);
    }
    // The process may exit between the check and the signal: then `kill` fails harmlessly.
    if send(pid, Signal::TERM).is_err() && !is_alive(pid) {
        return Ok(true);
    }
    if wait_gone(pid, grace).await {
        return Ok(true);
    }
    let _ = send(pid, Signal::KILL);
    wait_gone(pid, KILL_WAIT).await;
    Ok(false)
}

/// SIGTERM to every process of `pids` at once, up to `grace` for all to exit, then SIGKILL
/// for those still running. Returns the pids that had to be killed.
pub async fn terminate_all(pids: &[u32], grace: Duration) -> Vec<u32> {
    for &pid in pids {
        if is_alive(pid) {
            let _ = send(pid, Signal::TERM);
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    let mut killed = Vec::new();
    for &pid in pids {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !wait_gone(pid, left).await {
            let _ = send(pid, Signal::KILL);
            wait_gone(pid, KILL_WAIT).await;
            killed.push(pid);
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::process::Stdio;

    use super::*;

    #[test]
    fn this_process_is_alive_and_recognised() {
        let me = std::process::id();
        assert!(is_alive(me));
        let exe = std::env::current_exe().unwrap();
        assert!(is_running(me, &exe));
        assert!(!is_running(me, Path::new("/usr/bin/something-else")));
    }

    fn sleeper(script: &str) -> tokio::process::Child {
        tokio::process::Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[tokio::test]
    async fn terminate_stops_a_child_with_sigterm() {
        let mut child = sleeper("exec sleep 30");
        let pid = child.id().unwrap();
        let reap = tokio::spawn(async move { child.wait().await });
        assert!(terminate(pid, Duration::from_secs(5)).await.unwrap());
        let status = reap.await.unwrap().unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(Signal::TERM.as_raw()));
    }

    #[tokio::test]
    async fn terminate_all_kills_what_ignores_sigterm() {
        use tokio::io::AsyncReadExt as _;
        // The shell says when its trap is set, so SIGTERM cannot arrive before it.
        let mut stubborn =
            sleeper("trap '' TERM; echo ready; exec >/dev/null 2>&1; while :; do sleep 1; done");
        let mut ready = [0u8; 6];
        stubborn
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut ready)
            .await
            .unwrap();
        let pid = stubborn.id().unwrap();
        let reap = tokio::spawn(async move { stubborn.wait().await });
        assert_eq!(
            terminate_all(&[pid], Duration::from_millis(200)).await,
            [pid]
        );
        use std::os::unix::process::ExitStatusExt as _;
        let status = reap.await.unwrap().unwrap();
        assert_eq!(status.signal(), Some(Signal::KILL.as_raw()));
    }

    #[test]
    fn signalling_a_gone_pid_fails() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(send(pid, Signal::TERM).is_err());
        // kill(0, ..) would signal this test's own process group.
        assert!(send(0, Signal::TERM).is_err());
    }
}
