//! The processes of one `meshctl up`: started in order, watched while the mesh runs, and
//! stopped in reverse order, also when starting fails half-way or is interrupted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::{MeshError, Result};
use crate::postgres::Postgres;
use crate::processes;
use crate::services::{self, Infra, PlannedService};
use crate::state::{MeshState, NatsState, PostgresState, ServiceState, now_rfc3339};
use crate::up::UpOptions;
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
    services: Vec<(Child, ServiceState)>,
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

    pub(crate) async fn start(
        &mut self,
        ws: &Workspace,
        state_dir: &Path,
        nats_bin: &Path,
        planned: &[PlannedService],
        opts: &UpOptions,
    ) -> Result<()> {
        self.start_nats(nats_bin, state_dir, opts.nats_port).await?;
        let databases: Vec<&str> = planned
            .iter()
            .filter(|p| p.spec.database)
            .map(|p| p.spec.name)
            .collect();
        self.postgres.ensure_databases(&databases).await?;
        let infra = Infra {
            pg_port: opts.pg_port,
            nats_port: opts.nats_port,
            rust_log: opts.rust_log.clone(),
            peers: planned.iter().map(|p| (p.spec.name, p.grpc_addr)).collect(),
        };
        for service in planned {
            let bin = ws.binary(service.spec.name, opts.release);
            self.start_service(service, &infra, &bin, &ws.root)?;
        }
        self.wait_services_ready().await
    }

    pub(crate) async fn start_postgres(&mut self) -> Result<()> {
        say(&format!(
            "starting PostgreSQL on 127.0.0.1:{}",
            self.postgres.port()
        ));
        let pid = self.postgres.start(&self.logs.join("postgres.log")).await?;
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
        let log = self.logs.join(format!("{name}.log"));
        let mut cmd = Command::new(bin);
        cmd.envs(services::service_env(service, infra))
            .current_dir(root);
        if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
            // A start-up error is then its message, not a backtrace of `main` filling the log
            // tail that meshctl shows (panics still honour RUST_BACKTRACE).
            cmd.env("RUST_LIB_BACKTRACE", "0");
        }
        let child = processes::spawn_logged(&mut cmd, &log, name)?;
        let state = ServiceState {
            name: name.to_owned(),
            pid: child.id().unwrap_or_default(),
            grpc_addr: service.grpc_addr,
            admin_addr: service.admin_addr,
            binary: bin.to_path_buf(),
            log,
        };
        self.services.push((child, state));
        Ok(())
    }

    /// Polls each service's `/readyz` until it answers 200; fails with the log tail when a
    /// service exits or takes longer than [`READY_TIMEOUT`].
    async fn wait_services_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        for (child, svc) in &mut self.services {
            let mut pause = Duration::from_millis(10);
            while !crate::probe::is_ready(svc.admin_addr).await {
                let reason = match child.try_wait() {
                    Ok(Some(status)) => Some(format!("exited with {status}")),
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

    /// Waits for Ctrl-C/SIGTERM (`Ok`) or for a process to exit on its own (`Err`).
    pub(crate) async fn supervise(&mut self, stop: impl Future<Output = ()>) -> Result<()> {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return Ok(()),
                () = tokio::time::sleep(SUPERVISE_EVERY) => {
                    if let Some(err) = self.first_exit() {
                        return Err(err);
                    }
                }
            }
        }
    }

    fn first_exit(&mut self) -> Option<MeshError> {
        let nats_log = self.logs.join("nats.log");
        let children = self
            .services
            .iter_mut()
            .map(|(child, svc)| (child, svc.name.as_str(), svc.log.clone()))
            .chain(
                self.nats
                    .iter_mut()
                    .map(|(child, _)| (child, "nats-server", nats_log.clone())),
            );
        for (child, name, log) in children {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(MeshError::Exited {
                    name: name.to_owned(),
                    status: status.to_string(),
                    tail: processes::log_tail(&log, 20),
                    log,
                });
            }
        }
        let pg_gone = self
            .postgres_state
            .as_ref()
            .is_some_and(|pg| !processes::is_alive(pg.pid));
        let pg_log = self.logs.join("postgres.log");
        pg_gone.then(|| MeshError::Exited {
            name: "PostgreSQL".into(),
            status: "the postmaster is gone".into(),
            tail: processes::log_tail(&pg_log, 20),
            log: pg_log,
        })
    }

    /// Stops what was started: services, then nats-server, then PostgreSQL.
    pub(crate) async fn stop(&mut self) {
        let services: Vec<ServiceState> = self.services.iter().map(|(_, s)| s.clone()).collect();
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
        let services = self.services.iter_mut().map(|(child, _)| child);
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
            services: self.services.iter().map(|(_, s)| s.clone()).collect(),
        })
    }
}
