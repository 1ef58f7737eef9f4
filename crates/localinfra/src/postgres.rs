//! Finding a PostgreSQL installation: `initdb`, `postgres` and `pg_ctl` from one directory.

use std::path::{Path, PathBuf};

use crate::process::{is_executable, which};

/// The environment variable that names the directory of the PostgreSQL binaries.
pub const BIN_DIR_ENV: &str = "PG_BIN_DIR";

/// The programs of one PostgreSQL installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    /// The directory holding them.
    pub dir: PathBuf,
    /// `initdb`: creates a cluster.
    pub initdb: PathBuf,
    /// `postgres`: the server.
    pub postgres: PathBuf,
    /// `pg_ctl`: starts, stops and checks a server.
    pub pg_ctl: PathBuf,
}

/// Why [`PgBinaries::locate`] found nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgNotFound {
    /// `$PG_BIN_DIR` is set but lacks a program.
    #[error("PG_BIN_DIR={0:?} lacks initdb/postgres/pg_ctl")]
    BadBinDir(PathBuf),
    /// No installation on `PATH` or under `/usr/lib/postgresql`.
    #[error("no initdb/postgres/pg_ctl on PATH or in /usr/lib/postgresql/*/bin")]
    Missing,
}

// === impl PgBinaries ===

impl PgBinaries {
    /// `$PG_BIN_DIR` (when set, nothing else is tried), else the directory of `initdb` on
    /// `PATH`, else the highest `/usr/lib/postgresql/<major>/bin` (Debian's layout).
    pub fn locate() -> Result<Self, PgNotFound> {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
            let dir = PathBuf::from(dir);
            return Self::in_dir(&dir).ok_or(PgNotFound::BadBinDir(dir));
        }
        let on_path = which("initdb")
            .and_then(|initdb| std::fs::canonicalize(initdb).ok())
            .and_then(|initdb| Self::in_dir(initdb.parent()?));
        on_path
            .or_else(|| debian_bin_dirs().iter().find_map(|dir| Self::in_dir(dir)))
            .ok_or(PgNotFound::Missing)
    }

    /// The installation in `dir`, if all three programs are there and executable.
    #[must_use]
    pub fn in_dir(dir: &Path) -> Option<Self> {
        let bins = Self {
            dir: dir.to_path_buf(),
            initdb: dir.join("initdb"),
            postgres: dir.join("postgres"),
            pg_ctl: dir.join("pg_ctl"),
        };
        [&bins.initdb, &bins.postgres, &bins.pg_ctl]
            .iter()
            .all(|p| is_executable(p))
            .then_some(bins)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_directory_needs_all_three_programs() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        for name in ["initdb", "postgres"] {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert_eq!(PgBinaries::in_dir(dir.path()), None);
        let pg_ctl = dir.path().join("pg_ctl");
        std::fs::write(&pg_ctl, "#!/bin/sh\n").unwrap();
        assert_eq!(
            PgBinaries::in_dir(dir.path()),
            None,
            "pg_ctl is not executable"
        );
        std::fs::set_permissions(&pg_ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bins = PgBinaries::in_dir(dir.path()).unwrap();
        assert_eq!(bins.pg_ctl, pg_ctl);
    }
}
