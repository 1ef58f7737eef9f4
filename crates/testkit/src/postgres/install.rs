//! Finding the PostgreSQL binaries (through `shop-localinfra`) and keeping an initdb'ed
//! template data directory.
//!
//! `initdb` takes around a second; copying its result takes a few milliseconds. The template is
//! made once per machine (per PostgreSQL version and user), under an exclusive file lock so that
//! the many test processes nextest starts at once do not race, and copied for every server.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result, TestkitError};
use shop_localinfra::postgres::{PgBinaries, PgNotFound};

use crate::process::RunAs;

/// How to get PostgreSQL, for error messages.
pub(crate) const INSTALL_HINT: &str = "install PostgreSQL with `apt-get install -y postgresql` \
     (./scripts/test installs it when missing), or point PG_BIN_DIR at a directory holding \
     initdb, postgres and pg_ctl";

/// `$PG_BIN_DIR`, else `initdb` on `PATH`, else the highest `/usr/lib/postgresql/*/bin`.
pub(crate) fn locate() -> Result<PgBinaries> {
    PgBinaries::locate().map_err(|err| TestkitError::NotInstalled {
        program: "postgres",
        hint: match err {
            PgNotFound::BadBinDir(dir) => {
                format!("PG_BIN_DIR={dir:?} lacks initdb/postgres/pg_ctl; {INSTALL_HINT}")
            }
            PgNotFound::Missing => INSTALL_HINT.to_owned(),
        },
    })
}

/// The server version, e.g. `15.20`, from `postgres --version`.
pub(crate) async fn version(bins: &PgBinaries) -> Result<String> {
    let out = crate::process::run_checked(
        tokio::process::Command::new(&bins.postgres).arg("--version"),
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
