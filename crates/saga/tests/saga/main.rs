//! shop-saga against a real PostgreSQL process: order of steps, compensation in reverse, retries,
//! resuming after a worker dies mid-step, workers sharing runs without running one twice;
//! fencing, heartbeats and step timeouts, unknown outcomes, stuck runs, identities, the
//! operator's view and the cost of a run in statements.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod basics;
mod common;
mod cost;
mod fencing;
mod heartbeat;
mod identity;
mod stuck;
mod visibility;
