//! The cargo workspace meshctl runs: where it is, which service packages exist, where their
//! binaries land, and building them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio::process::Command;

use crate::error::{MeshError, Result};
use crate::processes::{run_checked, run_visible};

/// The workspace this meshctl was built from (`crates/meshctl/../..`).
#[must_use]
pub fn default_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// What `cargo metadata` says about the workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace root.
    pub root: PathBuf,
    /// Cargo's target directory (honours `CARGO_TARGET_DIR`).
    pub target_dir: PathBuf,
    packages: BTreeSet<String>,
}

#[derive(Deserialize)]
struct Metadata {
    workspace_root: PathBuf,
    target_directory: PathBuf,
    packages: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
}

impl Workspace {
    /// Asks `cargo metadata --no-deps` about the workspace at `root`.
    pub async fn discover(root: &Path) -> Result<Self> {
        let mut cmd = cargo();
        cmd.args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(root);
        let json = run_checked(&mut cmd, "cargo metadata").await?;
        Self::from_metadata(&json)
    }

    fn from_metadata(json: &str) -> Result<Self> {
        let meta: Metadata = serde_json::from_str(json).map_err(|err| MeshError::Command {
            program: "cargo metadata".into(),
            detail: format!("unexpected output: {err}"),
        })?;
        Ok(Self {
            root: meta.workspace_root,
            target_dir: meta.target_directory,
            packages: meta.packages.into_iter().map(|p| p.name).collect(),
        })
    }

    /// Whether the workspace has a package called `name`.
    #[must_use]
    pub fn has_package(&self, name: &str) -> bool {
        self.packages.contains(name)
    }

    /// Where `cargo build [--release]` puts binary `name`.
    #[must_use]
    pub fn binary(&self, name: &str, release: bool) -> PathBuf {
        let profile = if release { "release" } else { "debug" };
        self.target_dir.join(profile).join(name)
    }

    /// `cargo build [--release] -p <each of names>`, output on the terminal.
    pub async fn build(&self, names: &[&str], release: bool) -> Result<()> {
        let mut cmd = cargo();
        cmd.arg("build").current_dir(&self.root);
        if release {
            cmd.arg("--release");
        }
        for name in names {
            cmd.args(["-p", name]);
        }
        run_visible(&mut cmd, "cargo build").await
    }
}

/// `$CARGO` (set when meshctl runs under `cargo run`), else `cargo`.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_packages_and_paths_from_metadata() {
        let json = r#"{"workspace_root":"/w","target_directory":"/w/target",
            "packages":[{"name":"identity","version":"0.1.0"},{"name":"catalog"}],"other":1}"#;
        let ws = Workspace::from_metadata(json).unwrap();
        assert!(ws.has_package("identity") && ws.has_package("catalog"));
        assert!(!ws.has_package("orders"));
        assert_eq!(
            ws.binary("identity", false),
            Path::new("/w/target/debug/identity")
        );
        assert_eq!(
            ws.binary("identity", true),
            Path::new("/w/target/release/identity")
        );
    }
}
