//! Shipping service tests: the real service in-process on ephemeral ports, a real PostgreSQL
//! and nats-server, real gRPC clients. Order events are published into JetStream by the test as
//! the orders service's relay would (an envelope through `shop_events`). One test binary for
//! the whole suite.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod admin_state;
mod cancellation;
mod choreography;
mod health;
mod helpers;
mod invariants;
mod validation;
