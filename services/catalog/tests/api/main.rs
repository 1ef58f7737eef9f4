//! Catalog service tests: the real service in-process on ephemeral ports, a real PostgreSQL,
//! real gRPC clients. One test binary for the whole suite.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod health;
mod helpers;
mod idempotency;
mod price_events;
mod products;
mod protection;
mod shutdown;
mod validation;
