//! The failure log: how often each message really failed, kept apart from JetStream's delivery
//! count.
//!
//! JetStream counts every delivery, also those that merely waited too long in a client buffer
//! or whose consumer was restarted; dead-lettering on that count gives up on healthy events.
//! The runner counts failures itself instead, in a JetStream key-value bucket
//! ([`FAILURES_BUCKET`], key `<durable>.<stream>.<sequence>`), so that the count
//! survives a consumer restart and is shared by every replica of a durable consumer (a count in
//! memory would start again at zero after each crash, and a message that crashes its consumer
//! would never be given up on).
//!
//! A failure is a handler that returned an error or panicked, or a redelivery whose earlier
//! delivery started the handler and never settled (the consumer died while handling it). To
//! keep the common path free of extra round trips, a first delivery reads nothing and writes
//! only when its handler fails; redeliveries read the record and mark it as running before the
//! handler starts. A record is removed once its message is acked or dead-lettered; records left
//! behind (a message dropped by the stream's limits) expire with the bucket's `max_age`.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use crate::EventsError;

/// Key-value bucket of failure records.
pub const FAILURES_BUCKET: &str = "SHOP_EVENT_FAILURES";

/// Longer than any stream's retention plus a dead-letter stream outage worth waiting out.
const RECORD_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What is known about the earlier deliveries of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FailureRecord {
    /// Attempts that failed.
    pub failures: i64,
    /// A delivery that started the handler and has not settled yet.
    pub running: Option<i64>,
    /// The runner gave up; only moving it to the dead-letter stream is left to do.
    pub given_up: bool,
    /// Why the last attempt failed.
    pub last_error: String,
}

impl FailureRecord {
    /// Folds an unsettled earlier attempt into the count; true if there was one.
    pub fn count_unsettled(&mut self) -> bool {
        let Some(delivery) = self.running.take() else {
            return false;
        };
        self.failures += 1;
        self.last_error = format!(
            "delivery {delivery} never settled (the consumer died or hung while handling it)"
        );
        true
    }

    /// `<failures> <running or -> <given up 0|1>` on the first line, the last error after it.
    fn encode(&self) -> Bytes {
        let running = self
            .running
            .map_or_else(|| "-".to_owned(), |d| d.to_string());
        let given_up = u8::from(self.given_up);
        Bytes::from(format!(
            "{} {running} {given_up}\n{}",
            self.failures, self.last_error
        ))
    }

    /// Lenient: a record it cannot read counts as no failures rather than blocking the message.
    fn decode(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let (head, last_error) = text.split_once('\n').unwrap_or((&text, ""));
        let mut fields = head.split(' ');
        let failures = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        let running = fields.next().and_then(|f| f.parse().ok());
        let given_up = fields.next() == Some("1");
        Self {
            failures,
            running,
            given_up,
            last_error: last_error.to_owned(),
        }
    }
}

/// The failure records of one durable consumer.
#[derive(Debug, Clone)]
pub(crate) struct FailureLog {
    store: kv::Store,
    durable: String,
}

impl FailureLog {
    /// Creates or updates the bucket (idempotent, like the rest of provisioning). One bucket
    /// serves every consumer, so give their streams the same replica count (services do).
    pub async fn ensure(
        js: &jetstream::Context,
        durable: &str,
        replicas: usize,
    ) -> Result<Self, EventsError> {
        let store = js
            .create_or_update_key_value(kv::Config {
                bucket: FAILURES_BUCKET.to_owned(),
                description: "shop-events: failed attempts per message and durable consumer"
                    .to_owned(),
                history: 1,
                max_age: RECORD_MAX_AGE,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas.max(1),
                ..Default::default()
            })
            .await
            .map_err(|e| EventsError::Provision {
                what: FAILURES_BUCKET.to_owned(),
                source: e.into(),
            })?;
        Ok(Self {
            store,
            durable: durable.to_owned(),
        })
    }

    /// The record key of a message: `<durable>.<stream>.<sequence>`.
    pub fn key(&self, stream: &str, sequence: u64) -> String {
        format!(
            "{}.{}.{sequence}",
            key_token(&self.durable),
            key_token(stream)
        )
    }

    /// The record of `key`; empty when there is none.
    pub async fn get(&self, key: &str) -> Result<FailureRecord, EventsError> {
        let raw = self
            .store
            .get(key)
            .await
            .map_err(|e| self.error(e.into()))?;
        Ok(raw
            .map(|raw| FailureRecord::decode(&raw))
            .unwrap_or_default())
    }

    /// Stores the record of `key`.
    pub async fn put(&self, key: &str, record: &FailureRecord) -> Result<(), EventsError> {
        self.store
            .put(key, record.encode())
            .await
            .map_err(|e| self.error(e.into()))?;
        Ok(())
    }

    /// Removes the record of `key` (its message is settled for good).
    pub async fn clear(&self, key: &str) -> Result<(), EventsError> {
        self.store
            .purge(key)
            .await
            .map_err(|e| self.error(e.into()))
    }

    fn error(&self, source: async_nats::Error) -> EventsError {
        EventsError::Consume {
            consumer: self.durable.clone(),
            source,
        }
    }
}

/// Keys allow `[-_=/a-zA-Z0-9]` between dots; anything else in a name becomes `_`.
fn key_token(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let record = FailureRecord {
            failures: 2,
            running: Some(4),
            given_up: true,
            last_error: "transient: db down\nsecond line".to_owned(),
        };
        assert_eq!(FailureRecord::decode(&record.encode()), record);
        let empty = FailureRecord::default();
        assert_eq!(FailureRecord::decode(&empty.encode()), empty);
    }

    #[test]
    fn unreadable_record_counts_as_no_failures() {
        assert_eq!(FailureRecord::decode(b"\xff\xfe"), FailureRecord::default());
        assert_eq!(FailureRecord::decode(b""), FailureRecord::default());
    }

    #[test]
    fn an_unsettled_attempt_counts_as_a_failure() {
        let mut record = FailureRecord {
            failures: 1,
            running: Some(3),
            ..Default::default()
        };
        assert!(record.count_unsettled());
        assert_eq!((record.failures, record.running), (2, None));
        assert!(record.last_error.contains("delivery 3 never settled"));
        assert!(!record.count_unsettled(), "counted once");
        assert_eq!(record.failures, 2);
    }

    #[test]
    fn key_tokens_are_kv_safe() {
        assert_eq!(
            key_token("notifications-user.events*"),
            "notifications-user_events_"
        );
    }
}
