//! Dead letters: a copy of the original (headers and body) on `shop.dlq.<durable>.<subject>`
//! in `SHOP_DLQ`, with headers saying who gave up on it, where it came from and why.

use async_nats::jetstream::{self, message::PublishMessage};
use tracing::{debug, warn};

use crate::EventsError;
use crate::envelope::HEADER_MSG_ID;
use crate::provision::DLQ_SUBJECT_PREFIX;

/// Dead-letter header: why the message was given up on.
pub const HEADER_DLQ_ERROR: &str = "shop-dlq-error";
/// Dead-letter header: durable consumer that gave up.
pub const HEADER_DLQ_CONSUMER: &str = "shop-dlq-consumer";
/// Dead-letter header: original stream.
pub const HEADER_DLQ_STREAM: &str = "shop-dlq-stream";
/// Dead-letter header: original subject.
pub const HEADER_DLQ_SUBJECT: &str = "shop-dlq-subject";
/// Dead-letter header: original stream sequence.
pub const HEADER_DLQ_SEQUENCE: &str = "shop-dlq-stream-sequence";
/// Dead-letter header: deliveries made.
pub const HEADER_DLQ_DELIVERIES: &str = "shop-dlq-deliveries";
/// Dead-letter header: failed attempts counted by the runner (see [`crate::failures`]).
pub const HEADER_DLQ_FAILURES: &str = "shop-dlq-failures";
/// Dead-letter header: the original `Nats-Msg-Id` (the event id); the dead letter's own
/// `Nats-Msg-Id` is `<consumer>:<stream>:<sequence>` so that a retried move is stored once.
pub const HEADER_DLQ_EVENT_ID: &str = "shop-dlq-event-id";

/// Stores the dead letter of `message`, awaiting the stream's ack.
pub(crate) async fn store(
    js: &jetstream::Context,
    durable: &str,
    message: &jetstream::Message,
    reason: &str,
    failures: i64,
) -> Result<(), EventsError> {
    let info = message
        .info()
        .map_err(|e| EventsError::Envelope(e.to_string()))?;
    let subject = format!("{DLQ_SUBJECT_PREFIX}.{}.{}", durable, message.subject);
    let mut headers = message.headers.clone().unwrap_or_default();
    if let Some(id) = headers.get(HEADER_MSG_ID).map(|v| v.as_str().to_owned()) {
        headers.insert(HEADER_DLQ_EVENT_ID, id);
    }
    // Dedup key of the dead letter itself: a retried move is stored once.
    let dlq_id = format!("{}:{}:{}", durable, info.stream, info.stream_sequence);
    headers.insert(HEADER_MSG_ID, dlq_id.as_str());
    headers.insert(HEADER_DLQ_ERROR, header_safe(reason).as_str());
    headers.insert(HEADER_DLQ_CONSUMER, durable);
    headers.insert(HEADER_DLQ_STREAM, info.stream);
    headers.insert(HEADER_DLQ_SUBJECT, message.subject.as_str());
    headers.insert(HEADER_DLQ_SEQUENCE, info.stream_sequence.to_string());
    headers.insert(HEADER_DLQ_DELIVERIES, info.delivered.to_string());
    headers.insert(HEADER_DLQ_FAILURES, failures.to_string());
    let publish = PublishMessage::build()
        .payload(message.payload.clone())
        .headers(headers);
    let publish_error = |e: async_nats::Error| EventsError::Publish {
        subject: subject.clone(),
        source: e,
    };
    js.send_publish(subject.clone(), publish)
        .await
        .map_err(|e| publish_error(e.into()))?
        .await
        .map_err(|e| publish_error(e.into()))?;
    warn!(%subject, %reason, "moved to dead-letter stream");
    debug!(sequence = info.stream_sequence, "dead-lettered");
    Ok(())
}

/// Header values are one line of printable text; keep error texts readable and bounded.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_safe_flattens_and_bounds() {
        assert_eq!(header_safe("a\r\nb"), "a  b");
        assert_eq!(header_safe(&"x".repeat(5000)).len(), 1024);
    }
}
