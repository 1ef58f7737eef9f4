//! The mesh's PostgreSQL: installed with apt when missing, initialised once in the state
//! directory, run with `pg_ctl` (as the `postgres` user when meshctl runs as root), one
//! database per service. Finding the binaries and the user is `shop-localinfra`'s.

use std::path::{Path, PathBuf};

use shop_localinfra::{PgBinaries, RunAs};
use sqlx::{Connection as _, Executor as _, PgConnection};
use tokio::process::Command;

use crate::error::{IoContext as _, MeshError, Result};
use crate::processes::{self, is_root, run_checked, run_visible};
use crate::say;
use crate::state::PostgresState;

/// How long `pg_ctl start` may wait for the server to accept connections.
const START_TIMEOUT_SECS: u32 = 60;

/// A PostgreSQL installation and the data directory the mesh keeps in its state directory.
#[derive(Debug, Clone)]
pub struct Postgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    /// PostgreSQL refuses to run as root: then every server command runs as `postgres`.
    run_as: Option<RunAs>,
}

// === impl Postgres ===

impl Postgres {
    /// The server whose binaries are in `bin_dir`, data in `data_dir`, listening on `port`.
    /// Fails only when meshctl is root and there is no `postgres` user to run it as.
    pub fn new(bin_dir: PathBuf, data_dir: PathBuf, port: u16) -> Result<Self> {
        Ok(Self {
            bin_dir,
            data_dir,
            port,
            run_as: RunAs::unless_root("postgres")?,
        })
    }

    /// The mesh's server for `state_dir`: its cluster in `postgres/` and its log in
    /// `logs/postgres.log` there, or, when meshctl is root and the `postgres` user cannot reach
    /// the state directory, in the same layout outside it ([`crate::pg_dirs`]).
    pub async fn for_state_dir(bin_dir: PathBuf, state_dir: &Path, port: u16) -> Result<Self> {
        let run_as = RunAs::unless_root("postgres")?;
        let home = crate::pg_dirs::home(state_dir, run_as).await?;
        Ok(Self {
            bin_dir,
            data_dir: home.join("postgres"),
            port,
            run_as,
        })
    }

    /// The data directory (the cluster).
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's log: `logs/postgres.log` beside the data directory.
    #[must_use]
    pub fn log(&self) -> PathBuf {
        let home = self.data_dir.parent().unwrap_or(Path::new("/"));
        home.join("logs").join("postgres.log")
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What `state.json` records about this server running as `pid`.
    #[must_use]
    pub fn recorded(&self, pid: u32) -> PostgresState {
        PostgresState {
            pid,
            port: self.port,
            bin_dir: self.bin_dir.clone(),
            data_dir: self.data_dir.clone(),
        }
    }

    /// `pg_ctl` and friends, installing the `postgresql` package with apt when none is found.
    pub async fn ensure_installed() -> Result<PathBuf> {
        if let Some(dir) = locate_bin_dir() {
            return Ok(dir);
        }
        say("PostgreSQL is not installed; installing it with apt-get (package postgresql)");
        let sudo = !is_root();
        let mut update = privileged(sudo, "apt-get", &["update", "-qq"]);
        run_visible(&mut update, "apt-get update").await?;
        // Through `env`: sudo would drop DEBIAN_FRONTEND from the environment.
        let mut install = privileged(
            sudo,
            "env",
            &[
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "install",
                "-y",
                "-qq",
                "postgresql",
            ],
        );
        run_visible(&mut install, "apt-get install postgresql").await?;
        locate_bin_dir().ok_or_else(|| MeshError::NotInstalled {
            program: "PostgreSQL",
            hint: "apt-get installed postgresql but no initdb/pg_ctl was found; set PG_BIN_DIR"
                .into(),
        })
    }

    /// Gives the log directory to the server's user, then runs `initdb` unless the data
    /// directory already holds a cluster. Returns whether it ran.
    pub async fn init_once(&self) -> Result<bool> {
        let log = self.log();
        if let Some(logs) = log.parent() {
            std::fs::create_dir_all(logs).context(|| format!("create {}", logs.display()))?;
            // pg_ctl writes its log there as `postgres`.
            self.give_to_postgres(logs)?;
        }
        if self.data_dir.join("PG_VERSION").exists() {
            return Ok(false);
        }
        say(&format!(
            "initialising PostgreSQL in {}",
            self.data_dir.display()
        ));
        std::fs::create_dir_all(&self.data_dir)
            .context(|| format!("create {}", self.data_dir.display()))?;
        self.give_to_postgres(&self.data_dir)?;
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            // Its progress report would bury the one line that says why it failed.
            .stdout(std::process::Stdio::null())
            // Out of the terminal's process group: a Ctrl-C must not cut initdb short.
            .process_group(0);
        run_checked(&mut cmd, "initdb").await?;
        Ok(true)
    }

    /// Hands `dir` (not recursively) to the `postgres` user when running as root.
    fn give_to_postgres(&self, dir: &Path) -> Result<()> {
        match self.run_as {
            Some(user) => Ok(user.chown(dir)?),
            None => Ok(()),
        }
    }

    /// Whether a server runs on this data directory (`pg_ctl status`).
    pub async fn is_running(&self) -> bool {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("status").arg("-D").arg(&self.data_dir);
        run_checked(&mut cmd, "pg_ctl status").await.is_ok()
    }

    /// Starts the server, logging to [`Postgres::log`], and waits until it accepts
    /// connections. Returns the postmaster's pid.
    pub async fn start(&self) -> Result<u32> {
        let log = self.log();
        let options = format!(
            "-p {} -h 127.0.0.1 -k \"{}\"",
            self.port,
            self.data_dir.display()
        );
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", &START_TIMEOUT_SECS.to_string(), "-o", &options])
            // Out of the terminal's process group: Ctrl-C is meshctl's to handle.
            .process_group(0);
        if let Err(err) = run_checked(&mut cmd, "pg_ctl start").await {
            return Err(MeshError::NotReady {
                name: "PostgreSQL".into(),
                reason: err.chain(),
                tail: processes::log_tail(&log, 20),
                log,
            });
        }
        self.postmaster_pid()
    }

    /// Fast shutdown (sessions are disconnected), waiting for it to finish.
    pub async fn stop(&self) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w"]);
        run_checked(&mut cmd, "pg_ctl stop").await.map(drop)
    }

    /// Creates each of `names` unless it exists (names come from the service table).
    pub async fn ensure_databases(&self, names: &[&str]) -> Result<()> {
        let url = crate::services::database_url(self.port, "postgres");
        let mut conn = PgConnection::connect(&url).await?;
        for name in names {
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                    .bind(name)
                    .fetch_optional(&mut conn)
                    .await?;
            if exists.is_none() {
                say(&format!("creating database {name}"));
                // Names are table constants ([a-z]); quoting is enough.
                conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
                    .await?;
            }
        }
        conn.close().await?;
        Ok(())
    }

    /// The pid on the first line of `postmaster.pid`.
    fn postmaster_pid(&self) -> Result<u32> {
        let path = self.data_dir.join("postmaster.pid");
        let text = std::fs::read_to_string(&path).context(|| format!("read {}", path.display()))?;
        text.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .ok_or_else(|| MeshError::State {
                path,
                detail: "no pid on its first line".into(),
            })
    }

    /// `program` from the installation, run as `postgres` when meshctl is root.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        shop_localinfra::process::run_as(&mut cmd, self.run_as);
        cmd
    }
}

/// `$PG_BIN_DIR`, else the directory of `initdb` on `PATH`, else the highest
/// `/usr/lib/postgresql/<major>/bin`.
fn locate_bin_dir() -> Option<PathBuf> {
    PgBinaries::locate().ok().map(|bins| bins.dir)
}

/// `program args...`, behind `sudo` when not root.
fn privileged(sudo: bool, program: &str, args: &[&str]) -> Command {
    let mut cmd = if sudo {
        let mut cmd = Command::new("sudo");
        cmd.arg(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.args(args);
    cmd
}
