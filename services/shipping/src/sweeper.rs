//! The sweeper: the simulated carrier. Every interval it moves the shipments whose next step is
//! due, in batches: SCHEDULED -> IN_TRANSIT after the pickup delay, IN_TRANSIT -> DELIVERED
//! after the delivery delay (publishing ShipmentDelivered through the outbox). The schedule is
//! in the database (`shipments.due_at`), so a restart loses nothing and replicas share the
//! work (rows are taken with `FOR UPDATE SKIP LOCKED`).
//!
//! Beside it, [`purge_cancelled_orders`] forgets cancelled orders on the inbox's schedule.

use std::time::Duration;

use shop_events::inbox::InboxRetention;
use shop_runtime::CancellationToken;
use tokio::time::MissedTickBehavior;

use crate::store::PgShippingStore;

/// Shipments moved per transaction.
const BATCH: i64 = 200;

/// Every `interval`, advances due shipments until none is left; until `stop`.
pub async fn run(store: PgShippingStore, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        while !stop.is_cancelled() {
            match store.advance_due(BATCH).await {
                Ok(moved) => {
                    if moved.picked_up + moved.delivered > 0 {
                        tracing::debug!(
                            picked_up = moved.picked_up,
                            delivered = moved.delivered,
                            "shipments advanced"
                        );
                    }
                    let full = usize::try_from(BATCH).unwrap_or(usize::MAX);
                    if moved.picked_up < full && moved.delivered < full {
                        break;
                    }
                }
                // The database is away or busy: the next tick tries again.
                Err(err) => {
                    tracing::warn!(error = %shop_runtime::status::error_chain(&err), "sweep failed");
                    break;
                }
            }
        }
    }
}

/// Deletes the memory of orders cancelled longer ago than `retention.keep`, at once and then
/// every `retention.purge_every`, until `stop`: with the inbox's retention, which outlasts
/// everything the orders stream can still deliver.
pub async fn purge_cancelled_orders(
    store: PgShippingStore,
    retention: InboxRetention,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(retention.purge_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.purge_cancelled_orders(retention.keep).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "cancelled orders forgotten"),
            Err(err) => {
                tracing::warn!(error = %shop_runtime::status::error_chain(&err), "purge failed");
            }
        }
    }
}
