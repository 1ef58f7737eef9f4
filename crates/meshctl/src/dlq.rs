//! `meshctl dlq list|replay`: the dead letters in `SHOP_DLQ`, and putting one back.
//!
//! A dead letter is a copy of the original message (payload and headers) on
//! `shop.dlq.<durable>.<original subject>`, with `shop-dlq-*` headers saying which consumer
//! gave up and why, the original subject and the original event id (`shop-dlq-event-id`; its
//! own `Nats-Msg-Id` is `<consumer>:<stream>:<sequence>`).
//!
//! Replay publishes the original again: to the original subject, with the original payload and
//! envelope headers and `Nats-Msg-Id` = the original event id. Consumers that handled the
//! event before find that id in their inbox and skip it; the one that gave up handles it anew.
//! The dead letter is deleted once the stream acknowledged the replay. JetStream drops a
//! publish whose `Nats-Msg-Id` it saw within the stream's duplicate window (10 minutes for
//! `SHOP_<CTX>`): such a replay is reported as not stored and the dead letter is kept, to be
//! replayed after the window.

use std::path::Path;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::message::StreamMessage;
use bytes::Bytes;
use shop_events::envelope::HEADER_MSG_ID;
use shop_events::provision::DLQ_STREAM;
use shop_events::runner::{
    HEADER_DLQ_CONSUMER, HEADER_DLQ_ERROR, HEADER_DLQ_EVENT_ID, HEADER_DLQ_FAILURES,
    HEADER_DLQ_SUBJECT,
};

use crate::error::{MeshError, Result};
use crate::state::MeshState;
use crate::{jetstream, table};

/// The prefix of every dead-letter header (left out of a replay).
const DLQ_HEADER_PREFIX: &str = "shop-dlq-";

/// The original event inside a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// Where it was published.
    pub subject: String,
    /// Its event id, the `Nats-Msg-Id` consumers deduplicate by.
    pub event_id: String,
    /// Its envelope headers (`Nats-Msg-Id` = the event id, no `shop-dlq-*`).
    pub headers: HeaderMap,
    /// Its payload.
    pub payload: Bytes,
}

/// Reads the original event out of a dead letter's headers and payload.
pub fn original(headers: &HeaderMap, payload: Bytes) -> Result<Original> {
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    let missing = |name: &str| MeshError::Usage(format!("the dead letter has no {name} header"));
    let subject = header(HEADER_DLQ_SUBJECT).ok_or_else(|| missing(HEADER_DLQ_SUBJECT))?;
    let event_id = header(HEADER_DLQ_EVENT_ID).ok_or_else(|| missing(HEADER_DLQ_EVENT_ID))?;
    let mut original_headers = HeaderMap::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if name.starts_with(DLQ_HEADER_PREFIX) || name == HEADER_MSG_ID {
            continue;
        }
        for value in values {
            original_headers.append(name, value.as_str());
        }
    }
    original_headers.insert(HEADER_MSG_ID, event_id.as_str());
    Ok(Original {
        subject,
        event_id,
        headers: original_headers,
        payload,
    })
}

/// Prints up to `limit` dead letters, oldest first.
pub async fn list(state_dir: &Path, limit: usize) -> Result<()> {
    let js = connect(state_dir).await?;
    let letters = dead_letters(&js, limit).await?;
    if letters.is_empty() {
        println!("no dead letters in {DLQ_STREAM}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = letters.iter().map(row).collect();
    print!(
        "{}",
        table::render(
            &[
                "seq", "consumer", "subject", "event id", "failures", "stored", "error"
            ],
            &rows
        )
    );
    Ok(())
}

/// Replays the dead letters with these stream sequences (every one with `all`); returns
/// whether each was stored again.
pub async fn replay(state_dir: &Path, sequences: &[u64], all: bool) -> Result<bool> {
    let js = connect(state_dir).await?;
    let sequences: Vec<u64> = if all {
        dead_letters(&js, usize::MAX)
            .await?
            .iter()
            .map(|m| m.sequence)
            .collect()
    } else {
        sequences.to_vec()
    };
    if sequences.is_empty() {
        println!("nothing to replay");
        return Ok(true);
    }
    let stream = dlq_stream(&js).await?;
    let mut every_one = true;
    for sequence in sequences {
        let replayed = replay_one(&js, &stream, sequence).await;
        match replayed {
            Ok(line) => println!("{line}"),
            Err(err) => {
                every_one = false;
                println!("#{sequence}: NOT replayed: {}", err.chain());
            }
        }
    }
    Ok(every_one)
}

async fn replay_one(
    js: &Context,
    stream: &async_nats::jetstream::stream::Stream,
    sequence: u64,
) -> Result<String> {
    let letter = stream
        .get_raw_message(sequence)
        .await
        .map_err(|err| MeshError::nats(format!("dead letter #{sequence}"), err))?;
    let event = original(&letter.headers, letter.payload.clone())?;
    let ack = js
        .publish_with_headers(event.subject.clone(), event.headers, event.payload)
        .await
        .map_err(|err| MeshError::nats(format!("publishing to {}", event.subject), err))?
        .await
        .map_err(|err| MeshError::nats(format!("publishing to {}", event.subject), err))?;
    if ack.duplicate {
        return Err(MeshError::Usage(format!(
            "{} still remembers event {} (its duplicate window has not passed); the dead letter \
             is kept, replay it later",
            ack.stream, event.event_id
        )));
    }
    stream
        .delete_message(sequence)
        .await
        .map_err(|err| MeshError::nats(format!("deleting dead letter #{sequence}"), err))?;
    Ok(format!(
        "#{sequence}: replayed event {} to {} ({} #{}); dead letter deleted",
        event.event_id, event.subject, ack.stream, ack.sequence
    ))
}

async fn connect(state_dir: &Path) -> Result<Context> {
    let state = MeshState::running(state_dir)?;
    jetstream::connect(state.nats.port).await
}

async fn dlq_stream(js: &Context) -> Result<async_nats::jetstream::stream::Stream> {
    js.get_stream(DLQ_STREAM)
        .await
        .map_err(|err| MeshError::nats(format!("stream {DLQ_STREAM}"), err))
}

/// Up to `limit` dead letters, oldest first; none when the stream does not exist yet.
async fn dead_letters(js: &Context, limit: usize) -> Result<Vec<StreamMessage>> {
    let Ok(mut stream) = js.get_stream(DLQ_STREAM).await else {
        return Ok(Vec::new());
    };
    let info = stream
        .info()
        .await
        .map_err(|err| MeshError::nats(format!("stream {DLQ_STREAM}"), err))?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut letters = Vec::new();
    if info.state.messages == 0 {
        return Ok(letters);
    }
    for sequence in first..=last {
        if letters.len() >= limit {
            break;
        }
        // A deleted sequence (replayed) is a gap, not an error.
        if let Ok(message) = stream.get_raw_message(sequence).await {
            letters.push(message);
        }
    }
    Ok(letters)
}

fn row(letter: &StreamMessage) -> Vec<String> {
    let header = |name: &str| {
        letter
            .headers
            .get(name)
            .map_or_else(|| "?".to_owned(), |v| v.as_str().to_owned())
    };
    let mut error = header(HEADER_DLQ_ERROR);
    if error.chars().count() > 80 {
        error = error.chars().take(79).collect::<String>() + "…";
    }
    vec![
        letter.sequence.to_string(),
        header(HEADER_DLQ_CONSUMER),
        header(HEADER_DLQ_SUBJECT),
        header(HEADER_DLQ_EVENT_ID),
        header(HEADER_DLQ_FAILURES),
        stored_at(letter.time),
        error,
    ]
}

/// `2025-01-31T12:00:00Z`: RFC 3339 to the second.
fn stored_at(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_keeps_its_envelope_and_event_id_and_loses_the_dlq_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_MSG_ID, "shipping-order-events:SHOP_ORDERS:7");
        headers.insert(HEADER_DLQ_EVENT_ID, "0190-event");
        headers.insert(HEADER_DLQ_SUBJECT, "shop.orders.v1.order_confirmed");
        headers.insert(HEADER_DLQ_CONSUMER, "shipping-order-events");
        headers.insert(HEADER_DLQ_ERROR, "no such field");
        headers.insert("shop-event-type", "shop.orders.v1.OrderConfirmed");
        headers.insert("traceparent", "00-abc-def-01");
        let event = original(&headers, Bytes::from_static(b"body")).unwrap();
        assert_eq!(event.subject, "shop.orders.v1.order_confirmed");
        assert_eq!(event.event_id, "0190-event");
        assert_eq!(
            event.headers.get(HEADER_MSG_ID).map(|v| v.as_str()),
            Some("0190-event")
        );
        assert_eq!(
            event.headers.get("shop-event-type").map(|v| v.as_str()),
            Some("shop.orders.v1.OrderConfirmed")
        );
        assert!(event.headers.get("traceparent").is_some());
        assert!(event.headers.get(HEADER_DLQ_ERROR).is_none());
        assert!(event.headers.get(HEADER_DLQ_SUBJECT).is_none());
        assert_eq!(event.payload, Bytes::from_static(b"body"));
    }

    #[test]
    fn stored_times_are_shown_to_the_second_in_utc() {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789)
            .unwrap()
            .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(stored_at(at), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn a_letter_without_its_origin_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_DLQ_EVENT_ID, "e");
        let err = original(&headers, Bytes::new()).unwrap_err().to_string();
        assert!(err.contains(HEADER_DLQ_SUBJECT), "{err}");
    }
}
