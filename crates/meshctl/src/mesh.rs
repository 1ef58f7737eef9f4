//! The processes of one `meshctl up`: started in order, watched while the mesh runs, and
//! stopped in reverse order, also when starting fails half-way or is interrupted.
//!
//! While the mesh runs, a service that exits on its own is started again after a backoff
//! ([`crate::restart`]), its new pid and restart count written to `state.json`. PostgreSQL or
//! nats-server exiting ends the supervision instead: everything is stopped and `up` fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::error::{MeshError, Result};
use crate::postgres::Postgres;
use crate::processes;
use crate::restart::RestartPolicy;
use crate::services::{self, Infra, PlannedService};
use crate::state::{MeshState, NatsState, PostgresState, ServiceState, now_rfc3339};
use crate::workspace::Workspace;
use crate::{down, nats, say};

/// How long a service (or nats-server) may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the foreground supervisor checks that everything still runs.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);

/// What has been started so far, so a failure or Ctrl-C at any point stops exactly that.
pub(crate) struct Mesh {
    logs: PathBuf,
    /// Stopped through `pg_ctl` whenever it runs, even when a Ctrl-C came before its pid was
    /// recorded.
    postgres: Postgres,
    postgres_state: Option<PostgresState>,
    nats: Option<(Child, NatsState)>,
    services: Vec<Supervised>,
}

/// A service process and what it takes to start it again.
struct Supervised {
    /// The running process; `None` while a restart is due.
    child: Option<Child>,
    state: ServiceState,
    /// Its environment (`services::service_env`), for restarts.
    env: Vec<(&'static str, String)>,
    /// Its working directory.
    root: PathBuf,
    /// When the current process started.
    started: Instant,
    /// When the pending restart is due.
    restart_at: Option<Instant>,
    backoff: RestartPolicy,
}

// === impl Mesh ===

impl Mesh {
    pub(crate) fn new(logs: PathBuf, postgres: Postgres) -> Self {
        Self {
            logs,
            postgres,
            postgres_state: None,
            nats: None,
            services: Vec::new(),
        }
    }

    /// Starts nats-server, creates the databases, then starts every planned service (the
    /// `release` binaries or the debug ones) and waits until each is ready.
    pub(crate) async fn start(
        &mut self,
        ws: &Workspace,
        state_dir: &Path,
        nats_bin: &Path,
        planned: &[PlannedService],
        infra: &Infra,
        release: bool,
    ) -> Result<()> {
        self.start_nats(nats_bin, state_dir, infra.nats_port)
            .await?;
        let databases: Vec<&str> = planned
            .iter()
            .filter(|p| p.spec.database)
            .map(|p| p.spec.name)
            .collect();
        self.postgres.ensure_databases(&databases).await?;
        for service in planned {
            let bin = ws.binary(service.spec.name, release);
            self.start_service(service, infra, &bin, &ws.root)?;
        }
        self.wait_services_ready().await
    }

    pub(crate) async fn start_postgres(&mut self) -> Result<()> {
        say(&format!(
            "starting PostgreSQL on 127.0.0.1:{}",
            self.postgres.port()
        ));
        let pid = self.postgres.start().await?;
        self.postgres_state = Some(self.postgres.recorded(pid));
        Ok(())
    }

    async fn start_nats(&mut self, bin: &Path, state_dir: &Path, port: u16) -> Result<()> {
        say(&format!("starting nats-server on 127.0.0.1:{port}"));
        let log = self.logs.join("nats.log");
        let child = nats::start(bin, &state_dir.join("nats"), port, &log)?;
        let state = NatsState {
            pid: child.id().unwrap_or_default(),
            port,
            binary: bin.to_path_buf(),
        };
        // Recorded before waiting, so that an interrupted wait still stops it.
        let (child, _) = self.nats.insert((child, state));
        nats::wait_ready(port, child, &log, READY_TIMEOUT).await
    }

    fn start_service(
        &mut self,
        service: &PlannedService,
        infra: &Infra,
        bin: &Path,
        root: &Path,
    ) -> Result<()> {
        let name = service.spec.name;
        let env = services::service_env(service, infra);
        let log = self.logs.join(format!("{name}.log"));
        let child = spawn_service(bin, &env, root, &log, name)?;
        let state = ServiceState {
            name: name.to_owned(),
            pid: child.id().unwrap_or_default(),
            grpc_addr: service.grpc_addr,
            admin_addr: service.admin_addr,
            binary: bin.to_path_buf(),
            log,
            restarts: 0,
        };
        self.services.push(Supervised {
            child: Some(child),
            state,
            env,
            root: root.to_path_buf(),
            started: Instant::now(),
            restart_at: None,
            backoff: RestartPolicy::default(),
        });
        Ok(())
    }

    /// Polls each service's `/readyz` until it answers 200; fails with the log tail when a
    /// service exits or takes longer than [`READY_TIMEOUT`].
    async fn wait_services_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        for supervised in &mut self.services {
            let svc = &supervised.state;
            let mut pause = Duration::from_millis(10);
            while !crate::probe::is_ready(svc.admin_addr).await {
                let exited = match supervised.child.as_mut() {
                    Some(child) => child.try_wait().ok().flatten(),
                    None => None,
                };
                let reason = match exited {
                    Some(status) => Some(format!("exited with {status}")),
                    _ if tokio::time::Instant::now() >= deadline => {
                        Some(format!("/readyz not 200 within {READY_TIMEOUT:?}"))
                    }
                    _ => None,
                };
                if let Some(reason) = reason {
                    return Err(MeshError::NotReady {
                        name: svc.name.clone(),
                        reason,
                        log: svc.log.clone(),
                        tail: processes::log_tail(&svc.log, 20),
                    });
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            say(&format!("{} ready", svc.name));
        }
        Ok(())
    }

    /// Waits for Ctrl-C/SIGTERM (`Ok`) or for PostgreSQL or nats-server to exit (`Err`),
    /// restarting services that exit in the meantime and recording them in `state`.
    pub(crate) async fn supervise(
        &mut self,
        state: &mut MeshState,
        state_dir: &Path,
        stop: impl Future<Output = ()>,
    ) -> Result<()> {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return Ok(()),
                () = tokio::time::sleep(SUPERVISE_EVERY) => {
                    if let Some(err) = self.infrastructure_exit() {
                        return Err(err);
                    }
                    if self.restart_exited_services() {
                        state.services = self.services.iter().map(|s| s.state.clone()).collect();
                        state.save(state_dir)?;
                    }
                }
            }
        }
    }

    /// Notices services that exited and starts those whose backoff is over; returns whether a
    /// service was started again (its pid changed).
    fn restart_exited_services(&mut self) -> bool {
        let now = Instant::now();
        let mut restarted = false;
        for supervised in &mut self.services {
            if let Some(child) = supervised.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let delay = supervised
                    .backoff
                    .delay_after_exit(now - supervised.started);
                say(&format!(
                    "{} exited unexpectedly ({status}); restarting it in {delay:?}",
                    supervised.state.name
                ));
                supervised.child = None;
                supervised.restart_at = Some(now + delay);
            }
            if supervised.restart_at.is_some_and(|due| due <= now) {
                restarted |= supervised.restart();
            }
        }
        restarted
    }

    /// PostgreSQL or nats-server gone, as the error `up` ends with.
    fn infrastructure_exit(&mut self) -> Option<MeshError> {
        let nats_log = self.logs.join("nats.log");
        if let Some((child, _)) = self.nats.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Some(MeshError::Exited {
                name: "nats-server".to_owned(),
                status: status.to_string(),
                tail: processes::log_tail(&nats_log, 20),
                log: nats_log,
            });
        }
        let pg_gone = self
            .postgres_state
            .as_ref()
            .is_some_and(|pg| !processes::is_alive(pg.pid));
        let pg_log = self.postgres.log();
        pg_gone.then(|| MeshError::Exited {
            name: "PostgreSQL".into(),
            status: "the postmaster is gone".into(),
            tail: processes::log_tail(&pg_log, 20),
            log: pg_log,
        })
    }

    /// Stops what was started: services, then nats-server, then PostgreSQL.
    pub(crate) async fn stop(&mut self) {
        let services: Vec<ServiceState> = self.services.iter().map(|s| s.state.clone()).collect();
        down::stop_services(&services).await;
        if let Some((_, nats)) = &self.nats {
            down::stop_nats(nats).await;
        }
        if self.postgres.is_running().await {
            say("stopping PostgreSQL");
            if let Err(err) = self.postgres.stop().await {
                say(&format!("could not stop PostgreSQL: {}", err.chain()));
            }
        }
        // Reap what exited (the children are ours in the foreground).
        let services = self.services.iter_mut().filter_map(|s| s.child.as_mut());
        for child in services.chain(self.nats.iter_mut().map(|(child, _)| child)) {
            let _ = child.try_wait();
        }
    }

    /// The state file's contents; `None` until PostgreSQL and nats-server are started.
    pub(crate) fn state(&self) -> Option<MeshState> {
        Some(MeshState {
            started_at: now_rfc3339(),
            supervisor_pid: None,
            postgres: self.postgres_state.clone()?,
            nats: self.nats.as_ref()?.1.clone(),
            services: self.services.iter().map(|s| s.state.clone()).collect(),
            tls: None,
            traces: None,
        })
    }
}

// === impl Supervised ===

impl Supervised {
    /// Starts the service again; on failure schedules the next attempt. Returns whether it
    /// started.
    fn restart(&mut self) -> bool {
        let now = Instant::now();
        let name = self.state.name.clone();
        match spawn_service(
            &self.state.binary,
            &self.env,
            &self.root,
            &self.state.log,
            &name,
        ) {
            Ok(child) => {
                self.state.pid = child.id().unwrap_or_default();
                self.state.restarts = self.state.restarts.saturating_add(1);
                say(&format!(
                    "restarted {name} (pid {}, restart {})",
                    self.state.pid, self.state.restarts
                ));
                self.child = Some(child);
                self.started = now;
                self.restart_at = None;
                true
            }
            Err(err) => {
                let delay = self.backoff.delay_after_exit(Duration::ZERO);
                say(&format!(
                    "could not restart {name} ({}); trying again in {delay:?}",
                    err.chain()
                ));
                self.restart_at = Some(now + delay);
                false
            }
        }
    }
}

/// Starts service `name` from `bin` with `env`, output appended to `log`.
fn spawn_service(
    bin: &Path,
    env: &[(&'static str, String)],
    root: &Path,
    log: &Path,
    name: &str,
) -> Result<Child> {
    let mut cmd = Command::new(bin);
    cmd.envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .current_dir(root);
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // A start-up error is then its message, not a backtrace of `main` filling the log
        // tail that meshctl shows (panics still honour RUST_BACKTRACE).
        cmd.env("RUST_LIB_BACKTRACE", "0");
    }
    processes::spawn_logged(&mut cmd, log, name)
}
