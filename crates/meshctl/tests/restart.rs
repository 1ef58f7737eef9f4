//! Supervision: a service of a detached mesh killed with SIGKILL is started again by the
//! background supervisor, and `status` counts the restart; `down` leaves no process behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
#![allow(clippy::print_stdout)] // the commands' output, shown when the test fails

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use meshctl::state::MeshState;
use tempfile::TempDir;

fn meshctl(dir: &TempDir, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("--state-dir")
        .arg(dir.path())
        .args(args)
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
        let _ = meshctl(self.0, &["down"]);
    }
}

fn port() -> String {
    shop_testkit::free_port().unwrap().to_string()
}

/// Whether `pid` is gone (a zombie waiting for a reaper counts as gone).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
    })
}

#[test]
fn a_killed_service_comes_back_and_status_counts_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let _down = Down(&dir);
    let catalog = format!("catalog={}:{}", port(), port());
    let (pg, nats) = (port(), port());
    let up = [
        "up",
        "--detach",
        "--pg-port",
        &pg,
        "--nats-port",
        &nats,
        "--only",
        "catalog",
        "--port",
        &catalog,
    ];
    assert!(meshctl(&dir, &up).status.success(), "up --detach failed");
    let before = MeshState::load(dir.path()).unwrap().expect("state.json");
    let supervisor = before.supervisor_pid.expect("a supervisor");
    assert!(!gone(supervisor), "the supervisor outlives `up --detach`");
    let killed = before.service("catalog").unwrap().pid;

    let kill = Command::new("kill")
        .args(["-KILL", &killed.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let state = MeshState::load(dir.path()).unwrap().expect("state.json");
        let catalog = state.service("catalog").unwrap().clone();
        if catalog.pid != killed && meshctl(&dir, &["status"]).status.success() {
            break catalog;
        }
        assert!(Instant::now() < deadline, "catalog did not come back");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(after.restarts, 1);

    let status = meshctl(&dir, &["status"]);
    let table = String::from_utf8_lossy(&status.stdout);
    let row: Vec<&str> = table
        .lines()
        .find(|line| line.starts_with("catalog"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[1], after.pid.to_string(), "{table}");
    assert_eq!(row[3], "1", "restarts column: {table}");

    assert!(meshctl(&dir, &["down"]).status.success(), "down");
    for pid in [supervisor, after.pid, before.nats.pid, before.postgres.pid] {
        assert!(gone(pid), "pid {pid} still runs after down");
    }
    assert!(!dir.path().join("state.json").exists());
}
