//! The handler registry: one async handler per event type, decoded to its prost type.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::envelope::EventMeta;
use crate::error::HandlerError;

/// A decoded event as a handler receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery<E> {
    /// Envelope metadata (id for the inbox, correlation id, trace context, attempt).
    pub meta: EventMeta,
    /// The decoded body. Fields added by a newer producer are skipped by prost.
    pub event: E,
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
type ErasedHandler = Arc<dyn Fn(EventMeta, Bytes) -> HandlerFuture + Send + Sync>;

/// Handlers by full protobuf type name. Cheap to clone; share one between runners.
#[derive(Clone, Default)]
pub struct Handlers {
    by_type: HashMap<String, ErasedHandler>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_type.keys()).finish()
    }
}

impl Handlers {
    /// No handlers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for events of type `E` (replacing an earlier one). A body that does
    /// not decode as `E` is a permanent error: it goes to the dead-letter stream.
    pub fn on<E, F, Fut>(mut self, handler: F) -> Self
    where
        E: prost::Message + prost::Name + Default + 'static,
        F: Fn(Delivery<E>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: ErasedHandler = Arc::new(move |meta: EventMeta, payload: Bytes| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let event = E::decode(payload).map_err(|e| {
                    HandlerError::permanent(format!("decode {}: {e}", E::full_name()))
                })?;
                handler(Delivery { meta, event }).await
            }) as HandlerFuture
        });
        self.by_type.insert(E::full_name(), erased);
        self
    }

    /// The registered event type names.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.by_type.keys().map(String::as_str)
    }

    /// Runs the handler for `meta.event_type`; `None` when no handler is registered.
    pub(crate) fn dispatch(&self, meta: EventMeta, payload: Bytes) -> Option<HandlerFuture> {
        let handler = self.by_type.get(&meta.event_type)?;
        Some(handler(meta, payload))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use prost::Message;
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Ping {
        #[prost(uint32, tag = "1")]
        n: u32,
    }

    impl prost::Name for Ping {
        const NAME: &'static str = "Ping";
        const PACKAGE: &'static str = "shop.test.v1";
    }

    fn meta(event_type: &str) -> EventMeta {
        EventMeta {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            schema_version: 1,
            occurred_at: OffsetDateTime::now_utc(),
            correlation_id: None,
            traceparent: None,
            tracestate: None,
            subject: "shop.test.v1.ping".to_owned(),
            delivered: 1,
            stream_sequence: 1,
        }
    }

    #[tokio::test]
    async fn dispatches_by_type_and_decodes() {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        let handlers = Handlers::new().on(move |d: Delivery<Ping>| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(d.event.n as usize, Ordering::SeqCst);
                Ok(())
            }
        });
        let body = Bytes::from(Ping { n: 5 }.encode_to_vec());
        let fut = handlers.dispatch(meta("shop.test.v1.Ping"), body).unwrap();
        fut.await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 5);
        assert!(
            handlers
                .dispatch(meta("shop.test.v1.Other"), Bytes::new())
                .is_none()
        );
    }

    #[tokio::test]
    async fn undecodable_body_is_permanent() {
        let handlers = Handlers::new().on(|_: Delivery<Ping>| async { Ok(()) });
        let garbage = Bytes::from_static(&[0xff, 0xff, 0xff]);
        let err = handlers
            .dispatch(meta("shop.test.v1.Ping"), garbage)
            .unwrap()
            .await
            .unwrap_err();
        assert!(!err.is_transient(), "{err}");
    }
}
