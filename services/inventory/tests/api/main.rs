//! Inventory service tests: the real service in-process on ephemeral ports, a real PostgreSQL
//! and nats-server, real gRPC clients. One test binary for the whole suite. Every test ends
//! with `assert_conserved`, which checks the stock invariants straight in the database.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod admin_state;
mod contention;
mod expiry;
mod health;
mod helpers;
mod idempotency;
mod invariants;
mod low_stock;
mod stock;
mod validation;
