//! `meshctl load` against a mesh whose per-caller rate limit it exceeds: throttled calls
//! (RESOURCE_EXHAUSTED with RetryInfo) are waited out and reported apart, never failures.
//!
//! The quota is scaled down (10/s, burst 20) because a debug-built mesh on a shared machine
//! serves far fewer calls than the default 1000/s; the answer a caller gets over its quota is
//! the same at any size. `cli.rs` runs the same load at concurrency 16 with the defaults.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
#![allow(clippy::print_stdout)] // the commands' output, shown when the test fails

use std::process::{Command, Output};

use tempfile::TempDir;

/// Runs meshctl on the mesh in `dir` with `env` added.
fn meshctl(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("--state-dir")
        .arg(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    println!(
        "$ meshctl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Stops the mesh however the test ends.
struct Down<'a>(&'a TempDir);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = meshctl(self.0, &["down"], &[]);
    }
}

fn port() -> String {
    shop_testkit::free_port().unwrap().to_string()
}

#[test]
fn throttling_is_waited_out_and_reported_apart_from_failures() {
    let dir = tempfile::tempdir().unwrap();
    let _down = Down(&dir);
    let mut up = vec![
        "up".to_owned(),
        "--detach".into(),
        "--pg-port".into(),
        port(),
        "--nats-port".into(),
        port(),
    ];
    // Only what the read mix calls (and notifications, which identity's events reach).
    for name in ["identity", "catalog", "notifications"] {
        up.extend(["--port".into(), format!("{name}={}:{}", port(), port())]);
        up.extend(["--only".into(), name.into()]);
    }
    let up: Vec<&str> = up.iter().map(String::as_str).collect();
    let quota = [("RATE_LIMIT_PER_SECOND", "10"), ("RATE_LIMIT_BURST", "20")];
    assert!(
        meshctl(&dir, &up, &quota).status.success(),
        "up --detach failed"
    );

    let load = meshctl(
        &dir,
        &[
            "load",
            "--scenario",
            "reads",
            "--seconds",
            "2",
            "--concurrency",
            "16",
        ],
        &[],
    );
    let report = String::from_utf8_lossy(&load.stdout);
    assert!(load.status.success(), "load had failures:\n{report}");
    assert!(report.contains("no failures"), "{report}");
    assert!(
        report.contains("throttled: "),
        "the quota was exceeded: {report}"
    );
}
