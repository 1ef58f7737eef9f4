//! Supervision: a service killed with SIGKILL is started again, by the background supervisor
//! of a detached mesh (and `status` counts the restart; `down` leaves no process behind) and
//! by a foreground `up` alike (which SIGTERM then stops with everything it started).

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

/// Polls `state.json` until `ready` holds for it.
fn wait_for_state(dir: &TempDir, what: &str, ready: impl Fn(&MeshState) -> bool) -> MeshState {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(Some(state)) = MeshState::load(dir.path())
            && ready(&state)
        {
            return state;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_foreground_up_restarts_too_and_stops_everything_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let _down = Down(&dir);
    let catalog = format!("catalog={}:{}", port(), port());
    let (pg, nats) = (port(), port());
    let log = std::fs::File::create(dir.path().join("foreground-up.log")).unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("--state-dir")
        .arg(dir.path())
        .args(["up", "--pg-port", &pg, "--nats-port", &nats])
        .args(["--only", "catalog", "--port", &catalog])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let up_pid = up.id();
    let before = wait_for_state(&dir, "the foreground up", |s| {
        s.supervisor_pid == Some(up_pid)
    });
    let killed = before.service("catalog").unwrap().pid;
    assert!(
        Command::new("kill")
            .args(["-KILL", &killed.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let after = wait_for_state(&dir, "catalog restarted", |s| {
        s.service("catalog").is_some_and(|c| c.pid != killed)
    });
    let restarted = after.service("catalog").unwrap().clone();
    assert_eq!(restarted.restarts, 1);

    assert!(
        Command::new("kill")
            .args(["-TERM", &up_pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let exited = up.wait().unwrap();
    println!(
        "{}",
        std::fs::read_to_string(dir.path().join("foreground-up.log")).unwrap()
    );
    assert!(exited.success(), "up after SIGTERM: {exited}");
    for pid in [restarted.pid, before.nats.pid, before.postgres.pid] {
        assert!(
            gone(pid),
            "pid {pid} still runs after the foreground up stopped"
        );
    }
    assert!(!dir.path().join("state.json").exists());
}
