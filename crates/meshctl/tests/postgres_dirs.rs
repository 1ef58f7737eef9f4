//! Where `meshctl up` puts PostgreSQL's cluster, against a real PostgreSQL: as root with the
//! state directory under a private (0700) directory, as in a clone in root's home on Debian,
//! the server must still start; a state directory that cannot be used fails at once, on one
//! line naming the directory and the fix.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use meshctl::pg_dirs::OUTSIDE_ROOT;
use meshctl::postgres::Postgres;
use shop_localinfra::process::is_root;
use sqlx::{Connection as _, PgConnection};

/// Removes what the test put under [`OUTSIDE_ROOT`], also when it fails.
struct RemoveOnDrop(Option<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take().filter(|d| d.starts_with(OUTSIDE_ROOT)) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[tokio::test]
async fn root_runs_postgres_for_a_state_dir_in_a_private_home() -> anyhow::Result<()> {
    if !is_root() {
        // As any other user the server runs as that user, who can reach its own state dir.
        eprintln!("skipped: only root runs PostgreSQL as another user");
        return Ok(());
    }
    let home = tempfile::tempdir()?;
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))?;
    let state_dir = home.path().join("clone/.mesh");
    std::fs::create_dir_all(state_dir.join("logs"))?;
    // What a failed `up` of today leaves: an empty data directory owned by postgres.
    std::fs::create_dir(state_dir.join("postgres"))?;

    let bin_dir = Postgres::ensure_installed().await?;
    let port = shop_testkit::free_port()?;
    let pg = Postgres::for_state_dir(bin_dir.clone(), &state_dir, port).await?;
    let mut cleanup = RemoveOnDrop(pg.data_dir().parent().map(Path::to_path_buf));
    assert!(pg.init_once().await?, "initdb ran");
    let pid = pg.start().await?;
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let mut conn = PgConnection::connect(&url).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    assert_eq!(one, 1);
    conn.close().await?;
    assert_eq!(pg.recorded(pid).data_dir, pg.data_dir());
    pg.stop().await?;

    // The state directory leads to the cluster and its log, and the next `up` finds it.
    let linked = std::fs::canonicalize(state_dir.join("postgres"))?;
    assert_eq!(linked, std::fs::canonicalize(pg.data_dir())?);
    let log = std::fs::read_to_string(state_dir.join("logs/postgres.log"))?;
    assert!(log.contains("ready to accept connections"), "{log}");
    let again = Postgres::for_state_dir(bin_dir, &state_dir, port).await?;
    assert_eq!(again.data_dir(), pg.data_dir());
    assert!(!again.init_once().await?, "the cluster is reused");
    cleanup.0 = again.data_dir().parent().map(Path::to_path_buf);
    Ok(())
}

#[test]
fn an_unusable_state_dir_fails_at_once_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // A file where a directory should be: no user, root included, can create the state dir.
    std::fs::write(dir.path().join("file"), "").unwrap();
    let state_dir = dir.path().join("file/.mesh");
    let output = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("--state-dir")
        .arg(&state_dir)
        .args(["up", "--no-build", "--pg-port", "1", "--nats-port", "1"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(!output.status.success());
    assert_eq!(stdout, "", "nothing started or installed");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&state_dir.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("--state-dir"), "{stderr}");
}
