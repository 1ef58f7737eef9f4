//! Notifications service tests: the real service in-process, real PostgreSQL and nats-server;
//! events are published straight to JetStream as their producers would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod events;
mod helpers;
mod inbox;
