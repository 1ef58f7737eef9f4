//! The rules about events: each leaves its outbox, reaches its consumers and is applied, and
//! none is given up on.

use super::{Kind, Settled, Violation};
use crate::types::{JetStreamState, MeshState, OutboxState};

pub(super) fn outboxes(state: &MeshState) -> Vec<(&'static str, &OutboxState)> {
    let mut all = Vec::new();
    all.extend(state.orders.as_ref().map(|s| ("orders", &s.outbox)));
    all.extend(state.inventory.as_ref().map(|s| ("inventory", &s.outbox)));
    all.extend(state.payments.as_ref().map(|s| ("payments", &s.outbox)));
    all.extend(state.shipping.as_ref().map(|s| ("shipping", &s.outbox)));
    all
}

pub(super) fn outbox_backlog(
    service: &str,
    outbox: &OutboxState,
    settled: Settled,
    found: &mut Vec<Violation>,
) {
    if let Some(oldest) = outbox.oldest_unpublished_at
        && outbox.unpublished > 0
        && settled.all(&[oldest])
    {
        found.push(Violation::new(
            Kind::EventUnpublished,
            format!("outbox of {service}"),
            format!(
                "{} rows unpublished, the oldest written at {oldest}",
                outbox.unpublished
            ),
        ));
    }
    if outbox.parked > 0 {
        found.push(Violation::new(
            Kind::DeadLetter,
            format!("outbox of {service}"),
            format!("{} rows parked by the relay", outbox.parked),
        ));
    }
}

pub(super) fn consumers_behind(js: &JetStreamState, settled: Settled, found: &mut Vec<Violation>) {
    for consumer in &js.consumers {
        let last_progress = consumer.last_ack_at.unwrap_or(consumer.created_at);
        if consumer.behind() > 0 && settled.all(&[last_progress]) {
            found.push(Violation::new(
                Kind::EventNotApplied,
                format!("consumer {}/{}", consumer.stream, consumer.durable),
                format!(
                    "{} pending and {} unacknowledged, no ack since {last_progress}",
                    consumer.pending, consumer.ack_pending
                ),
            ));
        }
    }
    if js.dead_letters > 0 {
        found.push(Violation::new(
            Kind::DeadLetter,
            "stream SHOP_DLQ",
            format!("{} dead letters", js.dead_letters),
        ));
    }
}
