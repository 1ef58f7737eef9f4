//! Identity service tests: the real service in-process on ephemeral ports, a real PostgreSQL,
//! real gRPC clients. One test binary for the whole suite.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod accounts;
mod helpers;
mod login_limits;
mod nats_outage;
mod outbox;
mod signing_keys;
mod tokens;
mod validation;
