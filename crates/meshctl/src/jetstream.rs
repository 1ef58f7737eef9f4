//! What the mesh's JetStream holds, per service: each durable consumer's backlog (consumer
//! lag) and the dead letters in `SHOP_DLQ`.
//!
//! Durable consumers are named `<service>-<purpose>` (shop-events' convention) and dead
//! letters are stored on `shop.dlq.<durable>.<original subject>`, so both are attributed to a
//! service by the durable name's prefix.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, Context};
use futures::TryStreamExt as _;
use shop_events::provision::{DLQ_STREAM, DLQ_SUBJECT_PREFIX};

use crate::error::{MeshError, Result};
use crate::services::SERVICES;

/// How long connecting to nats-server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects to the mesh's nats-server on 127.0.0.1:`port`.
pub async fn connect(port: u16) -> Result<Context> {
    let url = format!("nats://127.0.0.1:{port}");
    let client = async_nats::ConnectOptions::new()
        .name("meshctl")
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(&url)
        .await
        .map_err(|err| MeshError::nats(format!("connecting to {url}"), err))?;
    Ok(jetstream::new(client))
}

/// The backlog of one service's durable consumers, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerLag {
    /// Messages not yet delivered (`num_pending`).
    pub pending: u64,
    /// Delivered, not yet acknowledged (`num_ack_pending`).
    pub unacked: u64,
}

/// Consumer lag per service, over every stream's durable consumers.
pub async fn consumer_lag(js: &Context) -> Result<BTreeMap<String, ConsumerLag>> {
    let mut lag = BTreeMap::<String, ConsumerLag>::new();
    let mut streams = js.streams();
    while let Some(stream) = streams
        .try_next()
        .await
        .map_err(|err| MeshError::nats("listing streams".into(), err))?
    {
        let name = stream.config.name;
        let stream = js
            .get_stream(&name)
            .await
            .map_err(|err| MeshError::nats(format!("stream {name}"), err))?;
        let mut consumers = stream.consumers();
        while let Some(info) = consumers
            .try_next()
            .await
            .map_err(|err| MeshError::nats(format!("consumers of {name}"), err))?
        {
            let service = owner_of(&info.name).unwrap_or(&info.name).to_owned();
            let entry = lag.entry(service).or_default();
            entry.pending += info.num_pending;
            entry.unacked += info.num_ack_pending as u64;
        }
    }
    Ok(lag)
}

/// Dead letters in `SHOP_DLQ` per service (of the consumer that gave up); empty when the
/// stream does not exist yet.
pub async fn dead_letters(js: &Context) -> Result<BTreeMap<String, u64>> {
    let Ok(stream) = js.get_stream(DLQ_STREAM).await else {
        return Ok(BTreeMap::new());
    };
    let mut subjects = stream
        .info_with_subjects(format!("{DLQ_SUBJECT_PREFIX}.>"))
        .await
        .map_err(|err| MeshError::nats(format!("subjects of {DLQ_STREAM}"), err))?;
    let mut counts = BTreeMap::<String, u64>::new();
    while let Some((subject, count)) = subjects
        .try_next()
        .await
        .map_err(|err| MeshError::nats(format!("subjects of {DLQ_STREAM}"), err))?
    {
        let durable = dead_letter_consumer(&subject).unwrap_or("?");
        let service = owner_of(durable).unwrap_or(durable).to_owned();
        *counts.entry(service).or_default() += count as u64;
    }
    Ok(counts)
}

/// The durable consumer in a dead letter's subject, `shop.dlq.<durable>.<original subject>`.
#[must_use]
pub fn dead_letter_consumer(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(DLQ_SUBJECT_PREFIX)?
        .strip_prefix('.')?
        .split('.')
        .next()
        .filter(|durable| !durable.is_empty())
}

/// The service of the table whose name prefixes durable `<service>-<purpose>` (the longest,
/// so `payment-processor-x` is the processor's, not payments').
#[must_use]
pub fn owner_of(durable: &str) -> Option<&'static str> {
    SERVICES
        .iter()
        .map(|spec| spec.name)
        .filter(|name| {
            durable
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('-'))
        })
        .max_by_key(|name| name.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durables_belong_to_the_service_they_start_with() {
        assert_eq!(owner_of("notifications-welcome"), Some("notifications"));
        assert_eq!(owner_of("shipping-order-events"), Some("shipping"));
        assert_eq!(owner_of("payment-processor-x"), Some("payment-processor"));
        assert_eq!(owner_of("paymentsx-y"), None);
        assert_eq!(owner_of("orders"), None);
    }

    #[test]
    fn the_consumer_is_read_from_a_dead_letter_subject() {
        assert_eq!(
            dead_letter_consumer("shop.dlq.shipping-order-events.shop.orders.v1.order_confirmed"),
            Some("shipping-order-events")
        );
        assert_eq!(dead_letter_consumer("shop.dlq."), None);
        assert_eq!(dead_letter_consumer("shop.orders.v1.x"), None);
    }
}
