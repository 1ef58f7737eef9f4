//! `meshctl down` and the stopping order shared with a supervising `up`: services (SIGTERM,
//! their grace period), then nats-server, then PostgreSQL (`pg_ctl stop -m fast`).

use std::path::Path;
use std::time::Duration;

use crate::error::Result;
use crate::postgres::Postgres;
use crate::processes::{self, Signal, is_running};
use crate::say;
use crate::services::SHUTDOWN_GRACE_SECS;
use crate::state::{MeshState, NatsState, PostgresState, ServiceState};

/// How long a supervising `meshctl up` may take to stop its mesh after SIGTERM.
pub(crate) const SUPERVISOR_GRACE: Duration = Duration::from_secs(SHUTDOWN_GRACE_SECS + 60);
/// How long nats-server may take to shut down before it is killed.
const NATS_GRACE: Duration = Duration::from_secs(15);

/// Stops the mesh recorded in `state_dir`; does nothing (successfully) when none is recorded.
pub async fn down(state_dir: &Path) -> Result<()> {
    let Some(state) = MeshState::load(state_dir)? else {
        say(&format!(
            "nothing to stop: no state file in {}",
            state_dir.display()
        ));
        return Ok(());
    };
    if let Some(pid) = state
        .supervisor_pid
        .filter(|pid| is_running(*pid, Path::new("meshctl")))
    {
        // A supervisor owns this mesh: let it stop everything in order (and not restart what
        // is stopped).
        say(&format!("stopping the supervisor (pid {pid})"));
        processes::terminate(pid, SUPERVISOR_GRACE).await?;
    }
    // What the supervisor left, as it last recorded it (it restarts services under new pids).
    let Some(state) = MeshState::load(state_dir)? else {
        say("the mesh is down");
        return Ok(());
    };
    stop_services(&state.services).await;
    stop_nats(&state.nats).await;
    stop_postgres(&state.postgres).await;
    MeshState::remove(state_dir)?;
    say("the mesh is down");
    Ok(())
}

/// Whether any process of `state` still runs.
#[must_use]
pub fn anything_running(state: &MeshState) -> bool {
    state
        .supervisor_pid
        .is_some_and(|pid| is_running(pid, Path::new("meshctl")))
        || state.services.iter().any(|s| is_running(s.pid, &s.binary))
        || is_running(state.nats.pid, &state.nats.binary)
        || postmaster_running(&state.postgres)
}

/// Whether the recorded postmaster pid still runs PostgreSQL.
fn postmaster_running(pg: &PostgresState) -> bool {
    is_running(pg.pid, &pg.bin_dir.join("postgres"))
}

/// SIGTERM to every service still running, then their grace period, then SIGKILL.
pub async fn stop_services(services: &[ServiceState]) {
    let running: Vec<&ServiceState> = services
        .iter()
        .filter(|s| is_running(s.pid, &s.binary))
        .collect();
    if running.is_empty() {
        return;
    }
    let names: Vec<&str> = running.iter().map(|s| s.name.as_str()).collect();
    say(&format!("stopping {}", names.join(", ")));
    let pids: Vec<u32> = running.iter().map(|s| s.pid).collect();
    // Their own grace for in-flight calls, plus a margin for closing pools and flushing.
    let grace = Duration::from_secs(SHUTDOWN_GRACE_SECS + 5);
    for pid in processes::terminate_all(&pids, grace).await {
        let name = running
            .iter()
            .find(|s| s.pid == pid)
            .map(|s| s.name.as_str());
        say(&format!(
            "{} did not stop within {grace:?}; killed it",
            name.unwrap_or("a service")
        ));
    }
}

/// Stops nats-server (SIGTERM: it shuts down cleanly).
pub async fn stop_nats(nats: &NatsState) {
    if !is_running(nats.pid, &nats.binary) {
        return;
    }
    say("stopping nats-server");
    if processes::terminate_all(&[nats.pid], NATS_GRACE)
        .await
        .is_empty()
    {
        return;
    }
    say(&format!(
        "nats-server did not stop within {NATS_GRACE:?}; killed it"
    ));
}

/// Stops PostgreSQL with a fast shutdown.
pub async fn stop_postgres(pg: &PostgresState) {
    if !postmaster_running(pg) {
        return;
    }
    say("stopping PostgreSQL");
    let stopped = match Postgres::new(pg.bin_dir.clone(), pg.data_dir.clone(), pg.port) {
        Ok(server) => server.stop().await,
        Err(err) => Err(err),
    };
    if let Err(err) = stopped {
        say(&format!("pg_ctl stop failed ({err}); sending SIGINT"));
        let _ = processes::signal(pg.pid, Signal::INT);
        processes::wait_gone(pg.pid, Duration::from_secs(30)).await;
    }
}
