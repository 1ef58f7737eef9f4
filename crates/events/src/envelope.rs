//! The event envelope: a protobuf body plus metadata carried in NATS headers.
//!
//! Headers, not a wrapper message, carry the metadata so that JetStream can deduplicate on
//! `Nats-Msg-Id`, consumers can route on the type without decoding, and tools (`nats stream view`)
//! show the metadata as text.

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use bytes::Bytes;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::EventsError;

/// JetStream's deduplication header; holds the event id.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Full protobuf name of the body, e.g. `shop.identity.v1.UserRegistered`.
pub const HEADER_EVENT_TYPE: &str = "shop-event-type";
/// Schema version of the body (a positive integer; additive changes keep the type name).
pub const HEADER_SCHEMA_VERSION: &str = "shop-schema-version";
/// When the business fact happened, RFC 3339.
pub const HEADER_OCCURRED_AT: &str = "shop-occurred-at";
/// Correlation id shared by every event of one business flow.
pub const HEADER_CORRELATION_ID: &str = "shop-correlation-id";
/// W3C trace context.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// W3C trace state.
pub const HEADER_TRACESTATE: &str = "tracestate";

/// The subject an event type is published on by default: `<package>.<snake_case(name)>`,
/// e.g. `shop.identity.v1.UserRegistered` -> `shop.identity.v1.user_registered`.
pub fn subject_for<E: prost::Name>() -> String {
    format!("{}.{}", E::PACKAGE, snake_case(E::NAME))
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A typed event with its metadata, ready to publish or to write to an outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope<E> {
    /// Event id (UUIDv7: time-ordered); JetStream deduplicates on it.
    pub id: Uuid,
    /// NATS subject; defaults to [`subject_for`].
    pub subject: String,
    /// Schema version of `event`; bump it on additive changes consumers may care about.
    pub schema_version: u32,
    /// When the fact happened.
    pub occurred_at: OffsetDateTime,
    /// Correlation id of the business flow, if any.
    pub correlation_id: Option<String>,
    /// W3C `traceparent` of the producing span, if any.
    pub traceparent: Option<String>,
    /// W3C `tracestate`, if any.
    pub tracestate: Option<String>,
    /// The protobuf body.
    pub event: E,
}

impl<E: prost::Message + prost::Name> EventEnvelope<E> {
    /// A new envelope: fresh UUIDv7 id, default subject, schema version 1, occurred now.
    pub fn new(event: E) -> Self {
        Self {
            id: Uuid::now_v7(),
            subject: subject_for::<E>(),
            schema_version: 1,
            occurred_at: OffsetDateTime::now_utc(),
            correlation_id: None,
            traceparent: None,
            tracestate: None,
            event,
        }
    }

    /// Sets the schema version.
    pub fn with_schema_version(mut self, version: u32) -> Self {
        self.schema_version = version;
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the W3C trace context (`traceparent`, optional `tracestate`).
    pub fn with_trace_context(mut self, traceparent: String, tracestate: Option<String>) -> Self {
        self.traceparent = Some(traceparent);
        self.tracestate = tracestate;
        self
    }

    /// Overrides the subject (it must stay inside the owning context's stream).
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// Encodes the body and flattens the metadata into headers.
    pub fn encode(&self) -> Result<EncodedEvent, EventsError> {
        let occurred_at = self
            .occurred_at
            .format(&Rfc3339)
            .map_err(|e| EventsError::Envelope(format!("occurred_at: {e}")))?;
        let mut headers = BTreeMap::new();
        headers.insert(HEADER_MSG_ID.to_owned(), self.id.to_string());
        headers.insert(HEADER_EVENT_TYPE.to_owned(), E::full_name());
        headers.insert(
            HEADER_SCHEMA_VERSION.to_owned(),
            self.schema_version.to_string(),
        );
        headers.insert(HEADER_OCCURRED_AT.to_owned(), occurred_at);
        let optional = [
            (HEADER_CORRELATION_ID, &self.correlation_id),
            (HEADER_TRACEPARENT, &self.traceparent),
            (HEADER_TRACESTATE, &self.tracestate),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                headers.insert(name.to_owned(), value.clone());
            }
        }
        Ok(EncodedEvent {
            id: self.id,
            subject: self.subject.clone(),
            event_type: E::full_name(),
            headers,
            payload: Bytes::from(self.event.encode_to_vec()),
        })
    }
}

/// An event after encoding: what travels on the wire and what the outbox stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// Event id (also in the `Nats-Msg-Id` header).
    pub id: Uuid,
    /// NATS subject.
    pub subject: String,
    /// Full protobuf type name (also in the `shop-event-type` header).
    pub event_type: String,
    /// All envelope headers, by name.
    pub headers: BTreeMap<String, String>,
    /// Protobuf bytes.
    pub payload: Bytes,
}

impl EncodedEvent {
    /// The headers as a NATS header map.
    pub fn nats_headers(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            map.insert(name.as_str(), value.as_str());
        }
        map
    }
}

/// Envelope metadata as a consumer sees it, read from the headers of a delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// Event id.
    pub id: Uuid,
    /// Full protobuf type name.
    pub event_type: String,
    /// Schema version the producer wrote.
    pub schema_version: u32,
    /// When the fact happened.
    pub occurred_at: OffsetDateTime,
    /// Correlation id, if any.
    pub correlation_id: Option<String>,
    /// W3C `traceparent`, if any.
    pub traceparent: Option<String>,
    /// W3C `tracestate`, if any.
    pub tracestate: Option<String>,
    /// Subject it arrived on.
    pub subject: String,
    /// Delivery attempt, starting at 1.
    pub delivered: i64,
    /// Stream sequence.
    pub stream_sequence: u64,
}

impl EventMeta {
    /// Reads the envelope from message headers. Missing or malformed required headers are an
    /// error (the message is then permanently undeliverable and goes to the dead-letter stream).
    pub fn from_headers(
        subject: &str,
        headers: Option<&HeaderMap>,
        delivered: i64,
        stream_sequence: u64,
    ) -> Result<Self, EventsError> {
        let headers = headers.ok_or_else(|| EventsError::Envelope("no headers".into()))?;
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        let required = |name: &str| {
            get(name).ok_or_else(|| EventsError::Envelope(format!("missing header {name}")))
        };
        let id = required(HEADER_MSG_ID)?;
        let id = Uuid::parse_str(&id)
            .map_err(|e| EventsError::Envelope(format!("{HEADER_MSG_ID} {id:?}: {e}")))?;
        let version = required(HEADER_SCHEMA_VERSION)?;
        let schema_version = version
            .parse()
            .map_err(|e| EventsError::Envelope(format!("{HEADER_SCHEMA_VERSION}: {e}")))?;
        let occurred_at = OffsetDateTime::parse(&required(HEADER_OCCURRED_AT)?, &Rfc3339)
            .map_err(|e| EventsError::Envelope(format!("{HEADER_OCCURRED_AT}: {e}")))?;
        Ok(Self {
            id,
            event_type: required(HEADER_EVENT_TYPE)?,
            schema_version,
            occurred_at,
            correlation_id: get(HEADER_CORRELATION_ID),
            traceparent: get(HEADER_TRACEPARENT),
            tracestate: get(HEADER_TRACESTATE),
            subject: subject.to_owned(),
            delivered,
            stream_sequence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct UserRegistered {
        #[prost(string, tag = "1")]
        user_id: String,
    }

    impl prost::Name for UserRegistered {
        const NAME: &'static str = "UserRegistered";
        const PACKAGE: &'static str = "shop.identity.v1";
    }

    #[test]
    fn subject_is_package_and_snake_name() {
        assert_eq!(
            subject_for::<UserRegistered>(),
            "shop.identity.v1.user_registered"
        );
        assert_eq!(snake_case("LowStock"), "low_stock");
    }

    #[test]
    fn headers_round_trip_into_meta() {
        let env = EventEnvelope::new(UserRegistered {
            user_id: "u1".into(),
        })
        .with_schema_version(3)
        .with_correlation_id("corr")
        .with_trace_context("00-abc-def-01".into(), Some("k=v".into()));
        let encoded = env.encode().unwrap();
        assert_eq!(encoded.event_type, "shop.identity.v1.UserRegistered");
        let headers = encoded.nats_headers();
        let meta = EventMeta::from_headers(&encoded.subject, Some(&headers), 1, 7).unwrap();
        assert_eq!(meta.id, env.id);
        assert_eq!(meta.schema_version, 3);
        assert_eq!(meta.correlation_id.as_deref(), Some("corr"));
        assert_eq!(meta.traceparent.as_deref(), Some("00-abc-def-01"));
        assert_eq!(meta.tracestate.as_deref(), Some("k=v"));
        // RFC 3339 keeps nanoseconds.
        assert_eq!(meta.occurred_at, env.occurred_at);
        assert_eq!(meta.id.get_version_num(), 7);
    }

    #[test]
    fn missing_type_is_an_envelope_error() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_MSG_ID, Uuid::now_v7().to_string().as_str());
        let err = EventMeta::from_headers("s", Some(&headers), 1, 1).unwrap_err();
        assert!(err.to_string().contains("missing header"), "{err}");
    }
}
