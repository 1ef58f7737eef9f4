//! Why a publish failed: the message's fault, or the connection's.
//!
//! Only a failure that this one message would meet again on a healthy connection counts toward
//! parking it: the client refuses it before sending (larger than the server's `max_payload`,
//! an invalid subject), JetStream refuses it (larger than the stream's `max_msg_size`), or no
//! stream captures its subject. Everything else (connection down, timeouts, a full ack
//! window, errors this module does not know) is transient: retried without counting, so a NATS
//! outage never parks anything.

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::subject::SubjectError;
use shop_events::EventsError;

/// What a failed publish says about its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server refuses this message and would again: counts as an attempt.
    Permanent(String),
    /// The connection or the server is in trouble: retry, don't count.
    Transient,
    /// JetStream answered "no responders": either no stream captures the subject (permanent)
    /// or JetStream itself is away (transient). [`confirm_no_stream`] tells which.
    NoResponders,
}

/// Sorts one publish error.
pub(crate) fn classify(err: &EventsError) -> Failure {
    let EventsError::Publish { source, .. } = err else {
        return Failure::Transient;
    };
    let Some(publish) = source.downcast_ref::<PublishError>() else {
        return Failure::Transient;
    };
    match publish.kind() {
        PublishErrorKind::MaxPayloadExceeded => Failure::Permanent(publish.to_string()),
        PublishErrorKind::StreamNotFound => Failure::NoResponders,
        PublishErrorKind::Other => match std::error::Error::source(publish) {
            Some(cause) if cause.is::<SubjectError>() => {
                Failure::Permanent(format!("invalid subject: {cause}"))
            }
            Some(cause) => match cause.downcast_ref::<jetstream::Error>() {
                Some(api) if is_per_message(api.error_code()) => {
                    Failure::Permanent(format!("JetStream refused the message: {api}"))
                }
                _ => Failure::Transient,
            },
            None => Failure::Transient,
        },
        _ => Failure::Transient,
    }
}

/// JetStream API errors about the message itself rather than the stream's state.
fn is_per_message(code: ErrorCode) -> bool {
    code == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
        || code == ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM
}

/// After "no responders" for `subject`: asks JetStream which streams capture it. An answer
/// naming none makes it permanent; no answer (JetStream away, timeout) keeps it transient.
pub(crate) async fn confirm_no_stream(js: &jetstream::Context, subject: &str) -> Failure {
    use async_nats::jetstream::context::GetStreamByNameErrorKind;
    match js.stream_by_subject(subject).await {
        Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
            Failure::Permanent(format!("no stream captures subject {subject:?}"))
        }
        Err(e) if e.kind() == GetStreamByNameErrorKind::InvalidSubject => {
            Failure::Permanent(format!("invalid subject {subject:?}"))
        }
        // A stream exists (it was just created, or the no-responders was a blip), or the
        // lookup failed: try again later without counting.
        Ok(_) | Err(_) => Failure::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish_error(err: PublishError) -> EventsError {
        EventsError::Publish {
            subject: "shop.test.v1.thing".into(),
            source: Box::new(err),
        }
    }

    #[test]
    fn oversize_and_invalid_subjects_are_permanent() {
        let oversize = publish_error(PublishError::new(PublishErrorKind::MaxPayloadExceeded));
        assert!(matches!(classify(&oversize), Failure::Permanent(_)));
        let subject = publish_error(PublishError::with_source(
            PublishErrorKind::Other,
            SubjectError::InvalidFormat,
        ));
        assert!(matches!(classify(&subject), Failure::Permanent(m) if m.contains("subject")));
    }

    #[test]
    fn connection_trouble_is_transient() {
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::MaxAckPending,
            PublishErrorKind::Other,
        ] {
            assert_eq!(
                classify(&publish_error(PublishError::new(kind))),
                Failure::Transient,
                "{kind:?}"
            );
        }
        let other = EventsError::Envelope("bad header".into());
        assert_eq!(classify(&other), Failure::Transient);
    }

    #[test]
    fn no_responders_needs_a_second_look() {
        let err = publish_error(PublishError::new(PublishErrorKind::StreamNotFound));
        assert_eq!(classify(&err), Failure::NoResponders);
    }
}
