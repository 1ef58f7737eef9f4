//! Event envelopes as consumers read them: any set of NATS headers is either an envelope or an
//! `Envelope` error (which dead-letters the message), never a panic.

use std::str::FromStr as _;

use arbitrary::Unstructured;
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use shop_events::envelope::{
    HEADER_CORRELATION_ID, HEADER_EVENT_TYPE, HEADER_MSG_ID, HEADER_OCCURRED_AT,
    HEADER_SCHEMA_VERSION, HEADER_TRACEPARENT, HEADER_TRACESTATE,
};
use shop_events::{EventMeta, EventsError};

/// Names the producer writes, so most inputs reach the parsing of each value.
const KNOWN: &[&str] = &[
    HEADER_MSG_ID,
    HEADER_EVENT_TYPE,
    HEADER_SCHEMA_VERSION,
    HEADER_OCCURRED_AT,
    HEADER_CORRELATION_ID,
    HEADER_TRACEPARENT,
    HEADER_TRACESTATE,
];

/// Reads headers built from `data` as an event envelope.
pub fn headers(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let mut headers = HeaderMap::new();
    while let Ok(true) = input.arbitrary::<bool>() {
        let name = match input.arbitrary::<u8>() {
            Ok(n) if usize::from(n) < KNOWN.len() * 16 => {
                KNOWN[usize::from(n) % KNOWN.len()].to_owned()
            }
            _ => input.arbitrary::<String>().unwrap_or_default(),
        };
        let value = input.arbitrary::<String>().unwrap_or_default();
        // Names and values off the wire are already valid; invalid ones cannot reach a consumer.
        if let (Ok(name), Ok(value)) = (HeaderName::from_str(&name), HeaderValue::from_str(&value))
        {
            headers.append(name, value);
        }
    }
    let subject = input.arbitrary::<String>().unwrap_or_default();
    let delivered = input.arbitrary::<i64>().unwrap_or(1);
    let sequence = input.arbitrary::<u64>().unwrap_or(1);
    let present = input.arbitrary::<bool>().unwrap_or(true);
    match EventMeta::from_headers(&subject, present.then_some(&headers), delivered, sequence) {
        Ok(meta) => {
            assert_eq!(meta.subject, subject);
            assert!(headers.get(HEADER_EVENT_TYPE).is_some());
        }
        Err(EventsError::Envelope(reason)) => assert!(!reason.is_empty()),
        Err(other) => panic!("an envelope error must be EventsError::Envelope: {other}"),
    }
}
