//! Where the mesh's PostgreSQL keeps its cluster (`postgres/`) and log (`logs/postgres.log`).
//!
//! Normally in the state directory. As root, the server runs as the `postgres` user, which
//! must be able to reach the cluster; it cannot when a directory above the state directory is
//! private, as root's home is on Debian (0700): the clone of a container or CI job run as root.
//! Then both go to the same layout under [`OUTSIDE_ROOT`], one directory per state directory,
//! and the state directory links to them, so `.mesh/postgres` and `.mesh/logs/postgres.log`
//! still lead there.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use shop_localinfra::RunAs;

use crate::error::{IoContext as _, MeshError, Result};
use crate::say;

/// Where clusters go that the `postgres` user could not reach in their state directory.
pub const OUTSIDE_ROOT: &str = "/var/lib/meshctl/postgres";

/// The directory that holds `postgres/` and `logs/postgres.log` for `state_dir`, prepared so
/// that `run_as` (the user the server runs as, `None` when not root) can reach it.
pub(crate) async fn home(state_dir: &Path, run_as: Option<RunAs>) -> Result<PathBuf> {
    let Some(user) = run_as else {
        return Ok(state_dir.to_path_buf());
    };
    let data_link = state_dir.join("postgres");
    if let Ok(target) = std::fs::read_link(&data_link) {
        // An earlier `up` put the cluster outside: keep using it.
        if let Some(home) = target.parent() {
            return Ok(home.to_path_buf());
        }
    }
    if user.can_reach(state_dir).await {
        return Ok(state_dir.to_path_buf());
    }
    refuse_a_cluster_in_the_way(&data_link, state_dir)?;
    let canonical =
        std::fs::canonicalize(state_dir).context(|| format!("resolve {}", state_dir.display()))?;
    let home = Path::new(OUTSIDE_ROOT).join(escape(&canonical));
    make_searchable(&home)?;
    let logs = home.join("logs");
    std::fs::create_dir_all(&logs).context(|| format!("create {}", logs.display()))?;
    if !user.can_reach(&home).await {
        return Err(MeshError::Unreachable {
            dir: home,
            reason: "the postgres user cannot reach it either".into(),
            fix: "make the directories above it searchable (chmod o+x), or run meshctl as a \
                  user other than root"
                .into(),
        });
    }
    link(&data_link, &home.join("postgres"))?;
    // The log link only helps find it: an old log file in the way is no reason to fail.
    let _ = link(
        &state_dir.join("logs/postgres.log"),
        &logs.join("postgres.log"),
    );
    say(&format!(
        "the postgres user cannot reach {} (a directory above it is private); PostgreSQL's \
         data and log are in {}, linked from there",
        state_dir.display(),
        home.display()
    ));
    Ok(home)
}

/// Fails when `data_dir` is a directory with something in it: a cluster the server cannot
/// reach, which meshctl must not hide behind a new one.
fn refuse_a_cluster_in_the_way(data_dir: &Path, state_dir: &Path) -> Result<()> {
    let in_use = std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some());
    if !in_use {
        return Ok(());
    }
    Err(MeshError::Unreachable {
        dir: data_dir.to_path_buf(),
        reason: "it holds a PostgreSQL cluster the postgres user cannot reach".into(),
        fix: format!(
            "make every directory above {} searchable (chmod o+x), or remove {} to start \
             afresh",
            state_dir.display(),
            data_dir.display()
        ),
    })
}

/// Creates `dir` and the directories between it and [`OUTSIDE_ROOT`]'s parent with mode 0755
/// (whatever the umask), so that another user can pass through them.
fn make_searchable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
    let top = Path::new(OUTSIDE_ROOT)
        .parent()
        .unwrap_or(Path::new(OUTSIDE_ROOT));
    for step in dir.ancestors().take_while(|d| d.starts_with(top)) {
        std::fs::set_permissions(step, std::fs::Permissions::from_mode(0o755))
            .context(|| format!("chmod {}", step.display()))?;
    }
    Ok(())
}

/// Makes `at` a symlink to `target`, replacing an earlier link or an empty directory (what a
/// failed `initdb` leaves).
fn link(at: &Path, target: &Path) -> Result<()> {
    match std::fs::symlink_metadata(at) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(at),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir(at),
        _ => Ok(()),
    }
    .context(|| format!("replace {}", at.display()))?;
    std::os::unix::fs::symlink(target, at)
        .context(|| format!("link {} to {}", at.display(), target.display()))
}

/// A directory name for the state directory at `path`: readable, and distinct for distinct
/// paths (`/` becomes `-`; every byte but `[A-Za-z0-9.]` becomes `_XX`).
fn escape(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    let bytes = bytes.strip_prefix(b"/").unwrap_or(bytes);
    let mut name = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'/' => name.push('-'),
            b if b.is_ascii_alphanumeric() || b == b'.' => name.push(char::from(b)),
            b => name.push_str(&format!("_{b:02x}")),
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_names_are_readable_and_distinct() {
        assert_eq!(escape(Path::new("/root/shop/.mesh")), "root-shop-.mesh");
        assert_eq!(escape(Path::new("/a-b/c")), "a_2db-c");
        assert_ne!(escape(Path::new("/a-b/c")), escape(Path::new("/a/b-c")));
        assert_ne!(escape(Path::new("/a_2d")), escape(Path::new("/a-")));
        assert_eq!(escape(Path::new("/x y")), "x_20y");
    }

    #[test]
    fn an_empty_directory_in_the_way_is_replaced_by_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("postgres");
        std::fs::create_dir(&at).unwrap();
        refuse_a_cluster_in_the_way(&at, dir.path()).unwrap();
        link(&at, Path::new("/elsewhere")).unwrap();
        assert_eq!(std::fs::read_link(&at).unwrap(), Path::new("/elsewhere"));
        link(&at, Path::new("/again")).unwrap();
        assert_eq!(std::fs::read_link(&at).unwrap(), Path::new("/again"));
    }

    #[test]
    fn a_cluster_in_the_way_is_refused_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("postgres");
        std::fs::create_dir(&at).unwrap();
        std::fs::write(at.join("PG_VERSION"), "15\n").unwrap();
        let err = refuse_a_cluster_in_the_way(&at, dir.path())
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains(&at.display().to_string()), "{err}");
        assert!(err.contains("chmod o+x"), "{err}");
    }
}
