//! Publishing envelopes to JetStream, awaiting the stream's acknowledgement.

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};

use crate::EventsError;
use crate::envelope::{EncodedEvent, EventEnvelope};

/// Publishes events and waits until JetStream has stored them.
///
/// An `Ok` means the event is in the stream (on disk when the server runs with
/// `sync_interval: always`). Publishing the same event id twice within the stream's duplicate
/// window stores it once; the second ack says `duplicate`.
#[derive(Debug, Clone)]
pub struct EventPublisher {
    js: jetstream::Context,
}

/// The stream's acknowledgement of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Stream that stored it.
    pub stream: String,
    /// Stream sequence.
    pub sequence: u64,
    /// The id was already in the duplicate window; nothing new was stored.
    pub duplicate: bool,
}

/// A sent event whose acknowledgement has not been awaited yet.
#[derive(Debug)]
pub struct PendingAck {
    subject: String,
    ack: PublishAckFuture,
}

// === impl EventPublisher ===

impl EventPublisher {
    /// A publisher over a JetStream context.
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    /// The underlying JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Encodes and publishes an event, awaiting the ack.
    pub async fn publish<E>(&self, event: &EventEnvelope<E>) -> Result<Published, EventsError>
    where
        E: prost::Message + prost::Name,
    {
        self.publish_encoded(&event.encode()?).await
    }

    /// Publishes an already encoded event, awaiting the ack.
    pub async fn publish_encoded(&self, event: &EncodedEvent) -> Result<Published, EventsError> {
        self.send(event).await?.ack().await
    }

    /// Sends an encoded event without waiting for its ack, so that many can be in flight;
    /// await [`PendingAck::ack`] before treating it as stored.
    pub async fn send(&self, event: &EncodedEvent) -> Result<PendingAck, EventsError> {
        let publish = PublishMessage::build()
            .payload(event.payload.clone())
            .headers(event.nats_headers());
        let ack = self
            .js
            .send_publish(event.subject.clone(), publish)
            .await
            .map_err(|e| publish_error(&event.subject, e))?;
        Ok(PendingAck {
            subject: event.subject.clone(),
            ack,
        })
    }
}

// === impl PendingAck ===

impl PendingAck {
    /// Waits for JetStream's acknowledgement.
    pub async fn ack(self) -> Result<Published, EventsError> {
        let ack = self
            .ack
            .await
            .map_err(|e| publish_error(&self.subject, e))?;
        Ok(Published {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

fn publish_error(subject: &str, err: impl Into<async_nats::Error>) -> EventsError {
    EventsError::Publish {
        subject: subject.to_owned(),
        source: err.into(),
    }
}
