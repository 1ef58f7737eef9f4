//! `meshctl up --detach`: the mesh keeps a supervisor after the command returns.
//!
//! Restarting a service that exits needs a process that outlives `up --detach`, so `up
//! --detach` does what needs the terminal itself (installing, building), then re-executes
//! meshctl as `meshctl up --supervisor --no-build <the same flags>` in its own process group,
//! output to `logs/supervisor.log`. That process is a foreground `up` without a terminal: it
//! starts everything, records its own pid in `state.json` (`supervisor_pid`) and supervises
//! until SIGTERM, restarting services that exit, exactly as the foreground `up` does. So both
//! modes share one code path, and the services are the supervisor's children (it reaps them
//! and sees each exit at once).
//!
//! `up --detach` shows the supervisor's log as it grows and returns once `state.json` names
//! the supervisor (everything is ready), or fails when the supervisor exits first. Ctrl-C
//! while it waits stops the supervisor, which stops what it started. `meshctl down` sends the
//! supervisor SIGTERM and waits for it to stop the mesh in order.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::error::{IoContext as _, MeshError, Result};
use crate::processes;
use crate::state::MeshState;
use crate::up::{Shutdown, UpOptions};
use crate::{down, say};

/// How often the log and the state file are looked at while the supervisor starts the mesh.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// Starts the supervisor and waits until it reports the mesh running.
pub(crate) async fn launch(
    state_dir: &Path,
    logs: &Path,
    opts: &UpOptions,
    shutdown: &mut Shutdown,
) -> Result<()> {
    let exe = std::env::current_exe().context(|| "find meshctl's own binary".into())?;
    let log = logs.join("supervisor.log");
    // One run per file: what follows on the terminal is this run's output only.
    std::fs::write(&log, "").context(|| format!("truncate {}", log.display()))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("--state-dir")
        .arg(state_dir)
        .args(supervisor_args(opts));
    let mut child = processes::spawn_logged(&mut cmd, &log, "the meshctl supervisor")?;
    let pid = child.id().unwrap_or_default();
    say(&format!(
        "started the supervisor (pid {pid}, output in {}):",
        log.display()
    ));
    let mut follower = LogFollower::new(log.clone());
    loop {
        tokio::select! {
            () = shutdown.recv() => {
                say("interrupted: stopping the supervisor");
                processes::terminate(pid, down::SUPERVISOR_GRACE).await?;
                let _ = child.try_wait();
                follower.print_new();
                return Err(MeshError::Interrupted);
            }
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        follower.print_new();
        if let Ok(Some(status)) = child.try_wait() {
            follower.print_new();
            return Err(MeshError::SupervisorExited {
                status: status.to_string(),
                log,
            });
        }
        let recorded = MeshState::load(state_dir)?.and_then(|state| state.supervisor_pid);
        if recorded == Some(pid) {
            follower.print_new();
            println!(
                "\nThe mesh runs in the background under supervisor pid {pid}: `meshctl status`, \
                 `meshctl demo`, `meshctl logs SERVICE`, `meshctl down`."
            );
            return Ok(());
        }
    }
}

/// The command line of the supervisor: `up` with the same settings, already built.
#[must_use]
pub fn supervisor_args(opts: &UpOptions) -> Vec<String> {
    let mut args: Vec<String> = [
        "up",
        "--supervisor",
        "--no-build",
        "--pg-port",
        &opts.pg_port.to_string(),
        "--nats-port",
        &opts.nats_port.to_string(),
        "--rust-log",
        &opts.rust_log,
        "--log-format",
        opts.log_format,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    if opts.release {
        args.push("--release".into());
    }
    if opts.plaintext {
        args.push("--plaintext".into());
    }
    match opts.otlp_port {
        Some(port) => args.extend(["--otlp-port".into(), port.to_string()]),
        None => args.push("--no-traces".into()),
    }
    for port in &opts.ports {
        args.push("--port".into());
        args.push(format!("{}={}:{}", port.name, port.grpc, port.admin));
    }
    for name in &opts.only {
        args.push("--only".into());
        args.push((*name).to_owned());
    }
    args
}

/// Prints what was appended to a file since the last look.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    offset: u64,
}

impl LogFollower {
    /// Follows `path` from its start.
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        Self { path, offset: 0 }
    }

    /// Follows `path` from its current end.
    #[must_use]
    pub fn from_end(path: PathBuf) -> Self {
        let offset = std::fs::metadata(&path).map_or(0, |meta| meta.len());
        Self { path, offset }
    }

    /// What was appended since the last call (all of it after a truncation), lossily decoded.
    pub fn read_new(&mut self) -> String {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return String::new();
        };
        let len = file.metadata().map_or(0, |meta| meta.len());
        if len < self.offset {
            self.offset = 0;
        }
        let mut bytes = Vec::new();
        let read = file
            .seek(SeekFrom::Start(self.offset))
            .and_then(|_| file.read_to_end(&mut bytes));
        if read.is_err() {
            return String::new();
        }
        self.offset += bytes.len() as u64;
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Prints [`Self::read_new`] on stdout.
    pub fn print_new(&mut self) {
        let text = self.read_new();
        if !text.is_empty() {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::parse_port_override;

    #[test]
    fn the_supervisor_gets_the_same_settings_without_building() {
        let opts = UpOptions {
            release: true,
            detach: true,
            supervisor: false,
            no_build: false,
            pg_port: 1,
            nats_port: 2,
            ports: vec![parse_port_override("catalog=3:4").unwrap()],
            only: vec!["catalog"],
            rust_log: "debug".into(),
            plaintext: true,
            otlp_port: Some(5),
            log_format: "json",
        };
        let args = supervisor_args(&opts).join(" ");
        assert_eq!(
            args,
            "up --supervisor --no-build --pg-port 1 --nats-port 2 --rust-log debug --log-format \
             json --release --plaintext --otlp-port 5 --port catalog=3:4 --only catalog"
        );
        assert!(!args.contains("--detach"));
    }

    #[test]
    fn the_follower_reads_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let mut follower = LogFollower::new(path.clone());
        assert_eq!(follower.read_new(), "", "a missing file is nothing yet");
        std::fs::write(&path, "one\n").unwrap();
        assert_eq!(follower.read_new(), "one\n");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"two\n").unwrap();
        assert_eq!(follower.read_new(), "two\n");
        assert_eq!(follower.read_new(), "");
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(
            follower.read_new(),
            "new\n",
            "after a truncation, from the start"
        );
        assert_eq!(LogFollower::from_end(path).read_new(), "");
    }
}
