//! `meshctl logs NAME [-f]`: the end of a process's log file (`logs/<name>.log` in the state
//! directory, where `up` sends each process's output), and with `--follow` what it appends
//! until Ctrl-C. Works for a service, `postgres`, `nats` and `supervisor`, also after `down`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::detach::LogFollower;
use crate::error::{MeshError, Result};
use crate::state::MeshState;

/// How often a followed log is read.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Prints the last `lines` lines of `name`'s log, then follows it when asked.
pub async fn logs(state_dir: &Path, name: &str, lines: usize, follow: bool) -> Result<()> {
    let path = log_path(state_dir, name)?;
    let text = std::fs::read(&path).map_err(|source| MeshError::Io {
        context: format!("read {}", path.display()),
        source,
    })?;
    print!("{}", last_lines(&String::from_utf8_lossy(&text), lines));
    if !follow {
        return Ok(());
    }
    let mut follower = LogFollower::from_end(path);
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            () = tokio::time::sleep(FOLLOW_EVERY) => follower.print_new(),
        }
    }
}

/// The log file of `name`: as recorded in `state.json`, else `logs/<name>.log`.
fn log_path(state_dir: &Path, name: &str) -> Result<PathBuf> {
    let recorded = MeshState::load(state_dir)
        .ok()
        .flatten()
        .and_then(|state| state.service(name).map(|s| s.log.clone()));
    let logs = state_dir.join("logs");
    let file = match name {
        "nats-server" => "nats".to_owned(),
        other => other.to_owned(),
    };
    let path = recorded.unwrap_or_else(|| logs.join(format!("{file}.log")));
    if path.is_file() {
        return Ok(path);
    }
    Err(MeshError::Usage(format!(
        "no log for {name:?} in {}; there are logs for: {}",
        logs.display(),
        available(&logs).join(", ")
    )))
}

/// The names with a log file in `logs`.
fn available(logs: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(logs)
        .map(|entries| {
            entries
                .filter_map(|entry| {
                    let name = entry.ok()?.file_name().into_string().ok()?;
                    name.strip_suffix(".log").map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The last `n` lines of `text`, each ending in a newline.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|line| format!("{line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb", 5), "a\nb\n");
        assert_eq!(last_lines("", 5), "");
    }

    #[test]
    fn finds_logs_by_name_and_lists_them_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("catalog.log"), "x\n").unwrap();
        std::fs::write(logs.join("nats.log"), "y\n").unwrap();
        assert_eq!(
            log_path(dir.path(), "catalog").unwrap(),
            logs.join("catalog.log")
        );
        assert_eq!(
            log_path(dir.path(), "nats-server").unwrap(),
            logs.join("nats.log")
        );
        let err = log_path(dir.path(), "orders").unwrap_err().to_string();
        assert!(err.contains("catalog, nats"), "{err}");
    }
}
