//! Payments service tests: the real payments service and the simulated processor in-process on
//! ephemeral ports, a real PostgreSQL and nats-server, real gRPC clients. One test binary.
//! Every test ends with [`helpers::TestApp::finish`], which checks the ledger against the
//! payments and against the processor's own records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a failed unwrap is a failed test

mod admin_state;
mod faults;
mod helpers;
mod idempotency;
mod invariants;
mod lifecycle;
mod validation;
