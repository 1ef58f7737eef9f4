//! The orders service against the real services it calls (catalog, inventory, payments and the
//! simulated processor, shipping), real PostgreSQL and nats-server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a failed unwrap is a failed test

mod crash;
mod faults;
mod helpers;
mod lifecycle;
mod metrics;
mod placing;
mod projection;
mod traces;
