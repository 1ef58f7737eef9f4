//! Local infrastructure for the shop mesh: the PostgreSQL and nats-server processes that
//! `meshctl up` runs for an operator and `shop-testkit` runs for each test.
//!
//! Both need the same plumbing, so it lives here once, without `unsafe`: signals through
//! rustix, liveness and identity from `/proc`, output into log files.
//!
//! # Layout
//!
//! - [`process`]: short helper commands, log files, the system user a server runs as
//!   ([`RunAs`]: PostgreSQL refuses to run as root).
//! - [`signal`]: liveness of a pid, signals, and stopping a process (SIGTERM, grace, SIGKILL).
//! - [`postgres`]: finding `initdb`, `postgres` and `pg_ctl` ([`PgBinaries`]).
//! - [`nats`]: finding `nats-server` (`$NATS_SERVER_BIN`, virtualenvs, `PATH`).
//!
//! Policy stays with the callers: which port, which data directory, how long to wait for
//! readiness, and what to tell the user when a program is missing.

mod error;
pub mod nats;
pub mod postgres;
pub mod process;
pub mod signal;

pub use error::{LocalInfraError, Result};
pub use postgres::PgBinaries;
pub use process::RunAs;
pub use signal::Signal;
