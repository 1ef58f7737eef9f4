//! `meshctl up`: install what is missing, build, start PostgreSQL, nats-server and every
//! service, wait until each is ready, then supervise (restart services that exit, with
//! backoff) until Ctrl-C/SIGTERM. `--detach` hands the starting and supervising to a
//! background meshctl ([`crate::detach`]). The processes themselves are handled in `mesh.rs`.

use std::path::{Path, PathBuf};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::error::{IoContext as _, MeshError, Result};
use crate::mesh::Mesh;
use crate::postgres::Postgres;
use crate::processes::is_root;
use crate::services::{self, Infra, PlannedService, PortOverride, SERVICES};
use crate::state::MeshState;
use crate::workspace::Workspace;
use crate::{certs, detach, down, nats, say, seed, table};

/// What `up` was asked to do.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Optimised build (`cargo build --release`, `target/release`).
    pub release: bool,
    /// Leave everything running in the background (under a supervisor process) and return.
    pub detach: bool,
    /// This process is the background supervisor `--detach` started.
    pub supervisor: bool,
    /// Use the binaries already in the target directory.
    pub no_build: bool,
    /// PostgreSQL's port.
    pub pg_port: u16,
    /// nats-server's client port.
    pub nats_port: u16,
    /// Per-service port overrides.
    pub ports: Vec<PortOverride>,
    /// Run only these services (all when empty).
    pub only: Vec<&'static str>,
    /// `RUST_LOG` for the services.
    pub rust_log: String,
    /// No mutual TLS.
    pub plaintext: bool,
    /// The trace receiver's port; `None` for no traces.
    pub otlp_port: Option<u16>,
    /// `LOG_FORMAT` of the services.
    pub log_format: &'static str,
}

/// Ctrl-C and SIGTERM, listened for from the start so neither kills meshctl half-way.
pub(crate) struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
}

impl Shutdown {
    fn listen() -> Result<Self> {
        let listen = |kind| signal(kind).context(|| "listen for signals".into());
        Ok(Self {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
        })
    }

    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Runs `meshctl up`.
pub async fn up(root: &Path, state_dir: &Path, opts: &UpOptions) -> Result<()> {
    let mut shutdown = Shutdown::listen()?;
    let logs = prepare_dirs(state_dir)?;
    refuse_if_running(state_dir)?;
    let ws = Workspace::discover(root).await?;
    let planned = services::plan(SERVICES, &opts.ports, |name| {
        if !opts.only.is_empty() && !opts.only.contains(&name) {
            return false;
        }
        let exists = ws.has_package(name);
        if !exists {
            say(&format!(
                "skipping {name}: no such package in the workspace yet"
            ));
        }
        exists
    });
    let pg_bin = Postgres::ensure_installed().await?;
    let nats_bin = nats::ensure_installed(&ws.root).await?;
    // Before the build: where the cluster goes can fail, and should fail early.
    let postgres = Postgres::for_state_dir(pg_bin, state_dir, opts.pg_port).await?;
    build(&ws, &planned, opts).await?;
    if opts.detach && !opts.supervisor {
        return detach::launch(state_dir, &logs, opts, &mut shutdown).await;
    }
    // Outside the interruptible part: an initdb cut short would leave a broken cluster.
    prepare_postgres(&postgres).await?;

    let certs = if opts.plaintext {
        None
    } else {
        let names: Vec<&str> = planned.iter().map(|p| p.spec.name).collect();
        Some(certs::ensure(state_dir, &names)?)
    };
    // Before the services, so their first spans have somewhere to go; after them, so their
    // last ones do too (it stops when `receiver` drops, after `mesh.stop()`).
    let receiver = match opts.otlp_port {
        Some(port) => Some(start_trace_receiver(port).await?),
        None => None,
    };
    let infra = Infra {
        otlp: receiver.as_ref().map(|r| r.addr),
        log_format: opts.log_format,
        pg_port: opts.pg_port,
        nats_port: opts.nats_port,
        rust_log: opts.rust_log.clone(),
        peers: planned.iter().map(|p| (p.spec.name, p.grpc_addr)).collect(),
        certs: certs.as_ref().map(|c| c.dir.clone()),
        identity_kek: Some(crate::kek::ensure(state_dir)?),
    };
    let mut mesh = Mesh::new(logs, postgres);
    // `pg_ctl start` is not cut short either (it would leave a postmaster nobody recorded);
    // a Ctrl-C during it is seen by the `select!` right after.
    let started = match mesh.start_postgres().await {
        Ok(()) => tokio::select! {
            started = mesh.start(&ws, state_dir, &nats_bin, &planned, &infra, opts.release) => started,
            () = shutdown.recv() => Err(MeshError::Interrupted),
        },
        Err(err) => Err(err),
    };
    let mut state = match started.map(|()| mesh.state()) {
        Ok(Some(state)) => state,
        failed => {
            mesh.stop().await;
            return Err(failed.err().unwrap_or(MeshError::Interrupted));
        }
    };
    state.supervisor_pid = Some(std::process::id());
    state.tls = certs.as_ref().map(certs::MeshCerts::developer);
    state.traces = receiver.as_ref().map(|r| r.addr);
    seed_demo_data(&state).await;
    // The table before the state file: `up --detach` returns once it sees the file.
    print!("{}", render_table(&state));
    if let (Some(certs), Some(first)) = (&certs, state.services.first()) {
        let addr = state
            .service("catalog")
            .map_or(first.grpc_addr, |s| s.grpc_addr);
        println!("\n{}", certs::grpcurl_hint(certs, addr));
    }
    if opts.supervisor {
        println!("\nSupervising in the background; `meshctl down` stops everything.");
    } else {
        println!(
            "\nThe mesh is up; try `meshctl demo` in another terminal. Ctrl-C stops everything."
        );
    }
    state.save(state_dir)?;
    let outcome = mesh.supervise(&mut state, state_dir, shutdown.recv()).await;
    mesh.stop().await;
    drop(receiver);
    MeshState::remove(state_dir)?;
    outcome
}

/// The trace receiver of this `up`, serving until dropped.
struct TraceReceiver {
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts the in-process OTLP receiver on 127.0.0.1:`port`, or on a free port when that one
/// is taken (a collector of its own on the machine, another mesh): state.json records where.
async fn start_trace_receiver(port: u16) -> Result<TraceReceiver> {
    let wanted = services::loopback(port);
    let listener = match tokio::net::TcpListener::bind(wanted).await {
        Ok(listener) => listener,
        Err(_) => tokio::net::TcpListener::bind(services::loopback(0))
            .await
            .context(|| "listen for traces (--otlp-port, or --no-traces)".into())?,
    };
    let addr = listener
        .local_addr()
        .context(|| "the trace receiver's address".into())?;
    if addr != wanted {
        say(&format!(
            "{wanted} is taken: the trace receiver listens on {addr}"
        ));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let store = shop_tracestore::SpanStore::default();
    tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        if let Err(error) = shop_tracestore::serve(listener, store, stopped).await {
            say(&format!("the trace receiver stopped: {error}"));
        }
    });
    Ok(TraceReceiver { addr, _stop: stop })
}

/// Seeds the demo products when catalog and inventory run; a failure is reported, not fatal
/// (`demo` seeds again).
async fn seed_demo_data(state: &MeshState) {
    if state.service("catalog").is_none() || state.service("inventory").is_none() {
        return;
    }
    match seed::seed(state).await {
        Ok(seeded) => {
            let products: Vec<String> = seeded
                .iter()
                .map(|s| format!("{} ({} available)", s.seed.sku, s.stock.available))
                .collect();
            say(&format!("demo products: {}", products.join(", ")));
        }
        Err(err) => say(&format!(
            "could not seed the demo products: {}",
            err.chain()
        )),
    }
}

/// Fails when `state.json` names processes that still run; removes it when all are gone.
fn refuse_if_running(state_dir: &Path) -> Result<()> {
    let Some(state) = MeshState::load(state_dir)? else {
        return Ok(());
    };
    if down::anything_running(&state) {
        return Err(MeshError::AlreadyRunning(state_dir.to_path_buf()));
    }
    MeshState::remove(state_dir)
}

/// Creates the state and log directories and checks that they take files; returns the log
/// directory.
fn prepare_dirs(state_dir: &Path) -> Result<PathBuf> {
    let logs = state_dir.join("logs");
    let usable = std::fs::create_dir_all(&logs).and_then(|()| {
        let probe = logs.join(".meshctl-write-test");
        std::fs::File::create(&probe)?;
        std::fs::remove_file(&probe)
    });
    if let Err(err) = usable {
        return Err(MeshError::Unreachable {
            dir: state_dir.to_path_buf(),
            reason: format!("cannot create files in {} ({err})", logs.display()),
            fix: "pass --state-dir (or set MESH_STATE_DIR) to a directory you can write, or fix \
                  its permissions"
                .into(),
        });
    }
    if is_root() {
        // PostgreSQL runs as `postgres` and must reach its data directory inside this one.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o755))
            .context(|| format!("chmod {}", state_dir.display()))?;
    }
    Ok(logs)
}

/// Initialises the cluster on first use and stops a server an earlier run left behind.
async fn prepare_postgres(pg: &Postgres) -> Result<()> {
    pg.init_once().await?;
    if pg.is_running().await {
        say("stopping a PostgreSQL an earlier run left behind");
        pg.stop().await?;
    }
    Ok(())
}

/// Builds the service binaries (unless `--no-build`) and checks that each exists.
///
/// Every service package of the table is built, also with `--only`: cargo unifies the features
/// of the packages it builds together, so building a subset would rebuild shared dependencies
/// with other features (and the full set again next time).
async fn build(ws: &Workspace, planned: &[PlannedService], opts: &UpOptions) -> Result<()> {
    let packages: Vec<&str> = SERVICES
        .iter()
        .map(|spec| spec.name)
        .filter(|name| ws.has_package(name))
        .collect();
    if !opts.no_build && !planned.is_empty() {
        let profile = if opts.release { "release" } else { "debug" };
        say(&format!("building {} ({profile})", packages.join(", ")));
        ws.build(&packages, opts.release).await?;
    }
    for name in planned.iter().map(|p| p.spec.name) {
        let bin = ws.binary(name, opts.release);
        if !bin.is_file() {
            return Err(MeshError::NotInstalled {
                program: "a service binary",
                hint: format!("{} is missing; run without --no-build", bin.display()),
            });
        }
    }
    Ok(())
}

/// The table `up` prints: every process with its addresses and pid.
#[must_use]
pub fn render_table(state: &MeshState) -> String {
    let mut rows = vec![
        vec![
            "postgres".to_owned(),
            format!("127.0.0.1:{}", state.postgres.port),
            "-".to_owned(),
            state.postgres.pid.to_string(),
        ],
        vec![
            "nats-server".to_owned(),
            format!("127.0.0.1:{}", state.nats.port),
            "-".to_owned(),
            state.nats.pid.to_string(),
        ],
    ];
    rows.extend(state.services.iter().map(|s| {
        vec![
            s.name.clone(),
            s.grpc_addr.to_string(),
            format!("http://{}", s.admin_addr),
            s.pid.to_string(),
        ]
    }));
    table::render(&["service", "gRPC addr", "admin URL", "pid"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::loopback;
    use crate::state::{NatsState, PostgresState, ServiceState};

    #[test]
    fn the_table_lists_infrastructure_then_services() {
        let state = MeshState {
            started_at: "2025-01-01T00:00:00Z".into(),
            supervisor_pid: None,
            postgres: PostgresState {
                pid: 1,
                port: 55432,
                bin_dir: "/pg".into(),
                data_dir: "/d".into(),
            },
            nats: NatsState {
                pid: 2,
                port: 54222,
                binary: "/n".into(),
            },
            services: vec![ServiceState {
                name: "catalog".into(),
                pid: 3,
                grpc_addr: loopback(50052),
                admin_addr: loopback(9102),
                binary: "/c".into(),
                log: "/l".into(),
                restarts: 0,
            }],
            tls: None,
            traces: None,
        };
        let text = render_table(&state);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "service      gRPC addr        admin URL              pid"
        );
        assert!(
            lines[2].starts_with("postgres     127.0.0.1:55432"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("nats-server  127.0.0.1:54222"),
            "{text}"
        );
        assert_eq!(
            lines[4],
            "catalog      127.0.0.1:50052  http://127.0.0.1:9102  3"
        );
    }
}
