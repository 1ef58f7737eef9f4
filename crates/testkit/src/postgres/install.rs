//! Finding the PostgreSQL binaries and keeping an initdb'ed template data directory.
//!
//! `initdb` takes around a second; copying its result takes a few milliseconds. The template is
//! made once per machine (per PostgreSQL version and user), under an exclusive file lock so that
//! the many test processes nextest starts at once do not race, and copied for every server.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result, TestkitError};
use crate::process::{RunAs, is_executable, which};

/// How to get PostgreSQL, for error messages.
pub(crate) const INSTALL_HINT: &str = "install PostgreSQL with `apt-get install -y postgresql` \
     (./scripts/test installs it when missing), or point PG_BIN_DIR at a directory holding \
     initdb, postgres and pg_ctl";

/// The three programs the test kit needs, from one installation.
#[derive(Debug, Clone)]
pub(crate) struct PgBinaries {
    pub(crate) initdb: PathBuf,
    pub(crate) postgres: PathBuf,
    pub(crate) pg_ctl: PathBuf,
}

impl PgBinaries {
    /// `$PG_BIN_DIR`, else `initdb` on `PATH`, else the highest `/usr/lib/postgresql/*/bin`.
    pub(crate) fn locate() -> Result<Self> {
        if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
            return Self::in_dir(Path::new(&dir)).ok_or_else(|| TestkitError::NotInstalled {
                program: "postgres",
                hint: format!("PG_BIN_DIR={dir:?} lacks initdb/postgres/pg_ctl; {INSTALL_HINT}"),
            });
        }
        let on_path = which("initdb")
            .and_then(|initdb| std::fs::canonicalize(initdb).ok())
            .and_then(|initdb| Self::in_dir(initdb.parent()?));
        on_path
            .or_else(|| debian_bin_dirs().iter().find_map(|dir| Self::in_dir(dir)))
            .ok_or_else(|| TestkitError::NotInstalled {
                program: "postgres",
                hint: INSTALL_HINT.to_owned(),
            })
    }

    fn in_dir(dir: &Path) -> Option<Self> {
        let bins = Self {
            initdb: dir.join("initdb"),
            postgres: dir.join("postgres"),
            pg_ctl: dir.join("pg_ctl"),
        };
        [&bins.initdb, &bins.postgres, &bins.pg_ctl]
            .iter()
            .all(|p| is_executable(p))
            .then_some(bins)
    }

    /// The server version, e.g. `15.20`, from `postgres --version`.
    pub(crate) async fn version(&self) -> Result<String> {
        let out = crate::process::run_checked(
            tokio::process::Command::new(&self.postgres).arg("--version"),
            "postgres --version",
        )
        .await?;
        // "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
        out.split_whitespace()
            .nth(2)
            .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
            .map(str::to_owned)
            .ok_or_else(|| TestkitError::Protocol {
                what: "postgres --version".into(),
                detail: out.trim().to_owned(),
            })
    }
}

/// `/usr/lib/postgresql/<major>/bin`, highest major first.
fn debian_bin_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versions.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// Returns the template data directory for this version and user, creating it if needed.
///
/// Blocking: call it from `spawn_blocking`.
pub(crate) fn ensure_template(
    bins: &PgBinaries,
    version: &str,
    run_as: Option<RunAs>,
) -> Result<PathBuf> {
    let owner = run_as.map_or_else(|| "self".to_owned(), |u| u.uid.to_string());
    let base = std::env::temp_dir();
    let template = base.join(format!("shop-testkit-pg-template-{version}-{owner}-v2"));
    if template.join("PG_VERSION").exists() {
        return Ok(template);
    }
    let lock_path = base.join(format!(
        "shop-testkit-pg-template-{version}-{owner}-v2.lock"
    ));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .context(|| format!("open {}", lock_path.display()))?;
    lock.lock()
        .context(|| format!("lock {}", lock_path.display()))?;
    // Another process may have built it while this one waited for the lock.
    if !template.join("PG_VERSION").exists() {
        build_template(bins, &template, run_as)?;
    }
    Ok(template)
}

/// initdb into a staging directory, then rename: a crash never leaves a half template.
fn build_template(bins: &PgBinaries, template: &Path, run_as: Option<RunAs>) -> Result<()> {
    let staging = template.with_extension("staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .context(|| format!("remove stale {}", staging.display()))?;
    }
    std::fs::create_dir(&staging).context(|| format!("create {}", staging.display()))?;
    if let Some(user) = run_as {
        user.chown(&staging)?;
    }
    tracing::info!(template = %template.display(), "creating the PostgreSQL template (initdb)");
    let mut cmd = std::process::Command::new(&bins.initdb);
    cmd.arg("-D")
        .arg(&staging)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
        .arg("--wal-segsize=1")
        .arg("--no-sync")
        .stdin(std::process::Stdio::null());
    if let Some(user) = run_as {
        user.apply_std(&mut cmd);
    }
    let output = cmd.output().context(|| "run initdb".into())?;
    if !output.status.success() {
        return Err(TestkitError::Command {
            program: "initdb".into(),
            detail: format!(
                "{}\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    std::fs::rename(&staging, template)
        .context(|| format!("rename {} into place", staging.display()))
}

/// Copies the template into `dest` (which must not exist), owned by `run_as`.
///
/// Blocking: call it from `spawn_blocking`.
pub(crate) fn copy_template(template: &Path, dest: &Path, run_as: Option<RunAs>) -> Result<()> {
    std::fs::create_dir(dest).context(|| format!("create {}", dest.display()))?;
    let perms = std::fs::metadata(template)
        .context(|| format!("stat {}", template.display()))?
        .permissions();
    std::fs::set_permissions(dest, perms).context(|| format!("chmod {}", dest.display()))?;
    if let Some(user) = run_as {
        user.chown(dest)?;
    }
    let entries = std::fs::read_dir(template).context(|| format!("list {}", template.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("list {}", template.display()))?;
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        let kind = entry
            .file_type()
            .context(|| format!("stat {}", from.display()))?;
        if kind.is_dir() {
            copy_template(&from, &to, run_as)?;
        } else {
            std::fs::copy(&from, &to).context(|| format!("copy {}", from.display()))?;
            if let Some(user) = run_as {
                user.chown(&to)?;
            }
        }
    }
    Ok(())
}
