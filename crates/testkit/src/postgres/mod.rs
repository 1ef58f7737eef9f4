//! A real PostgreSQL server in a temp dir, on a free port, killed and removed on drop.

mod install;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{Connection as _, Executor as _, PgConnection};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use shop_localinfra::PgBinaries;
use shop_localinfra::signal::{self, Signal};

use self::install::INSTALL_HINT;
use crate::error::{IoContext, Result, TestkitError};
use crate::process::{self, RunAs};

/// How long a server may take to accept connections before the start counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at finding a port nobody else grabs between `free_port` and the server's bind.
const PORT_ATTEMPTS: usize = 3;

/// A PostgreSQL server owned by one test: trust auth, user `postgres`, durability off.
///
/// Dropping it shuts the server down (immediate mode) and removes its directory.
#[derive(Debug)]
pub struct Postgres {
    // Field order matters: the child is dropped (killed) before its directory is removed.
    child: Option<Child>,
    bins: PgBinaries,
    run_as: Option<RunAs>,
    version: String,
    port: u16,
    next_db: AtomicU64,
    dir: TempDir,
}

// === impl Postgres ===

impl Postgres {
    /// Starts a server from the cached template (made with `initdb` on first use).
    pub async fn start() -> Result<Self> {
        let bins = install::locate()?;
        let version = install::version(&bins).await?;
        let run_as = process::run_as_unless_root("postgres", INSTALL_HINT)?;
        let dir = tempfile::Builder::new()
            .prefix("shop-testkit-pg-")
            .tempdir()
            .context(|| "create a temp dir for postgres".into())?;
        if let Some(user) = run_as {
            user.chown(dir.path())?;
        }
        let (b, v, data) = (bins.clone(), version.clone(), dir.path().join("data"));
        tokio::task::spawn_blocking(move || {
            let template = install::ensure_template(&b, &v, run_as)?;
            install::copy_template(&template, &data, run_as)
        })
        .await
        .map_err(|e| TestkitError::Io {
            context: "prepare the postgres data dir".into(),
            source: std::io::Error::other(e),
        })??;
        let mut pg = Self {
            child: None,
            bins,
            run_as,
            version,
            port: 0,
            next_db: AtomicU64::new(0),
            dir,
        };
        pg.start_on_free_port().await?;
        Ok(pg)
    }

    /// Base URL, `postgres://postgres@127.0.0.1:PORT` (its default database is `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// URL of database `name` on this server.
    pub fn database_url(&self, name: &str) -> String {
        format!("{}/{name}", self.url())
    }

    /// The TCP port, the same across [`Postgres::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Server version, e.g. `15.20`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Whether the server process is running (it is, unless [`Postgres::stop`] was called).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Creates database `name` (`[a-z0-9_]`, not starting with a digit) and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        validate_name(name)?;
        let mut conn = PgConnection::connect(&self.url()).await?;
        // The name is validated above: quoting it is enough.
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await?;
        conn.close().await?;
        Ok(self.database_url(name))
    }

    /// Creates a database with a name unique on this server and returns its URL.
    pub async fn fresh_database(&self) -> Result<String> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("test_{n}")).await
    }

    /// Shuts the server down (fast mode: sessions are disconnected) and waits for it to exit.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            // SIGINT: fast shutdown.
            if let Err(err) = signal::send(pid, Signal::INT) {
                tracing::warn!(%err, "could not signal postgres; killing it");
                let _ = child.start_kill();
            }
        }
        process::wait_exit(&mut child, STOP_TIMEOUT, "postgres").await
    }

    /// Stops the server if it runs, then starts it again on the same port with the same data.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        let child = self.spawn()?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn start_on_free_port(&mut self) -> Result<()> {
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = crate::free_port()?;
            self.child = Some(self.spawn()?);
            match self.wait_ready().await {
                Ok(()) => return Ok(()),
                Err(err) if port_taken(&self.log_path()) => {
                    tracing::debug!(port = self.port, "port taken; retrying");
                    self.child = None;
                    last_err = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_err.unwrap_or(TestkitError::NotRunning("postgres")))
    }

    fn spawn(&self) -> Result<Child> {
        let dir = self.dir.path();
        let (stdout, stderr) = process::log_stdio(&self.log_path())?;
        let mut cmd = Command::new(&self.bins.postgres);
        cmd.arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(dir)
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        process::run_as(&mut cmd, self.run_as);
        cmd.spawn().context(|| "spawn postgres".into())
    }

    /// Polls a real connection until it succeeds; fails early if the process exits.
    async fn wait_ready(&mut self) -> Result<()> {
        let url = self.url();
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Ok(conn) = PgConnection::connect(&url).await {
                let _ = conn.close().await;
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
                return Err(self.startup_error(format!("no connection within {READY_TIMEOUT:?}")));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    fn startup_error(&self, reason: String) -> TestkitError {
        TestkitError::Startup {
            process: "postgres",
            reason,
            log: self.log_path(),
            tail: process::log_tail(&self.log_path(), 30),
        }
    }

    /// The unix socket directory (also the server's temp dir).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    /// Immediate shutdown rather than SIGKILL, so the server removes its shared memory.
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let Some(pid) = child.id() else { return };
        if signal::send(pid, Signal::QUIT).is_ok() {
            process::block_until_exit(child, Duration::from_secs(5));
        }
        // Anything still running is killed by `kill_on_drop`.
    }
}

fn validate_name(name: &str) -> Result<()> {
    let valid = (1..=63).contains(&name.len())
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(TestkitError::InvalidDatabaseName(name.to_owned()))
    }
}

fn port_taken(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| text.contains("could not bind"))
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn database_names() {
        assert!(validate_name("test_1").is_ok());
        assert!(validate_name("orders").is_ok());
        for bad in ["", "1abc", "Robert\"; DROP", "a-b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
