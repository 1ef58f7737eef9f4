//! The sweeper: releases reservations past their expiry, so a saga that died for good cannot
//! hold stock forever. Each release is its own transaction (locks in the store's order) and
//! publishes `StockReleased` with reason `expired` through the outbox.

use std::time::Duration;

use shop_runtime::CancellationToken;
use tokio::time::MissedTickBehavior;

use crate::store::PgInventoryStore;

/// Every `interval`, releases expired reservations until none is left; until `stop`.
pub async fn run(store: PgInventoryStore, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        while !stop.is_cancelled() {
            match store.release_one_expired().await {
                Ok(Some(released)) => {
                    tracing::info!(reservation_id = %released.id, "expired reservation released");
                }
                Ok(None) => break,
                // The database is away or busy: the next tick tries again.
                Err(err) => {
                    tracing::warn!(error = %shop_runtime::status::error_chain(&err), "sweep failed");
                    break;
                }
            }
        }
    }
}
