//! Transactional outbox on sqlx/Postgres with a JetStream relay.
//!
//! A service writes its event with [`add`] in the same transaction as the business change, so
//! the event exists iff the change committed. The [`Relay`] publishes committed rows to
//! JetStream (awaiting acks) and marks them published. Any number of relays may run against one
//! database: batches are claimed with `FOR UPDATE SKIP LOCKED`. Events keep their id as
//! `Nats-Msg-Id`, so a republish after a crash is dropped by JetStream's duplicate window.
//!
//! # Layout
//!
//! - [`store`] has the table's migrations ([`MIGRATOR`], [`migrate`]), [`add`], [`lag`],
//!   [`purge_published`], [`republish`].
//! - [`relay`] has [`Relay`] and [`RelayConfig`]; a row the server refuses for itself (too
//!   large, invalid subject, no stream) is retried with backoff and after
//!   [`RelayConfig::park_after`] attempts parked in `outbox_dead_letters`
//!   ([`dead_letters`], [`requeue_dead_letter`]); connection trouble never counts.
//! - [`metrics`] has [`RelayMetrics`], gauges a service registers in its `/metrics`.
//!
//! Order: rows are claimed in id order, but several relays, retries and concurrent
//! transactions mean consumers must not rely on a global order.

mod classify;
mod error;
pub mod metrics;
pub mod relay;
pub mod store;

pub use error::OutboxError;
pub use metrics::RelayMetrics;
pub use relay::{Relay, RelayConfig};
pub use store::{
    DeadLetter, MIGRATOR, NOTIFY_CHANNEL, OutboxLag, add, add_encoded, dead_letter_count,
    dead_letters, lag, migrate, purge_published, republish, requeue_dead_letter,
};
