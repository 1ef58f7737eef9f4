//! Request validation layer: enforces the protovalidate (`buf.validate`) rules written beside
//! the fields in `proto/`, for every RPC of every service, before any handler runs.
//!
//! The layer knows each method's input type from the file descriptor set. It buffers the one
//! request message of a unary or server-streaming call, decodes it dynamically, validates it,
//! and either answers `INVALID_ARGUMENT` with a `BadRequest` detail naming each field at fault
//! or passes the untouched bytes on to tonic. Client-streaming calls and paths it does not know
//! (health, reflection) pass through unchanged.
//!
//! The work and the answer are bounded whatever a client sends: checking is linear in the
//! message (which is at most `max_message_bytes`), and the status carries at most
//! [`shop_validate::MAX_VIOLATIONS`] violations within a fixed byte budget, so its metadata
//! stays far below the 8 KiB that grpcio and grpc-go accept. Strings holding NUL are refused
//! here too (see `shop_validate`), as PostgreSQL could not store them.

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic::{Status, body::Body};

use crate::RuntimeError;

/// The rules of every method in a descriptor set, compiled once and shared.
#[derive(Clone)]
pub struct RequestValidator {
    inputs: Arc<HashMap<String, MessageDescriptor>>,
    validator: Arc<shop_validate::Validator>,
    max_message_bytes: usize,
}

impl std::fmt::Debug for RequestValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestValidator")
            .field("methods", &self.inputs.len())
            .finish_non_exhaustive()
    }
}

impl RequestValidator {
    /// Reads the input type of every unary and server-streaming method in `descriptor_set`.
    pub fn from_descriptor_set(
        descriptor_set: &[u8],
        max_message_bytes: usize,
    ) -> Result<Self, RuntimeError> {
        let pool = DescriptorPool::decode(descriptor_set)
            .map_err(|err| RuntimeError::Descriptor(err.to_string()))?;
        let mut inputs = HashMap::new();
        for service in pool.services() {
            for method in service.methods().filter(|m| !m.is_client_streaming()) {
                inputs.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    method.input(),
                );
            }
        }
        let validator = shop_validate::Validator::new(&pool)
            .map_err(|err| RuntimeError::Descriptor(err.to_string()))?;
        Ok(Self {
            inputs: Arc::new(inputs),
            validator: Arc::new(validator),
            max_message_bytes,
        })
    }

    /// Validates one encoded message of the input type of `path`. `Ok` for unknown paths.
    pub fn check(&self, path: &str, message: &[u8]) -> Result<(), Status> {
        let Some(descriptor) = self.inputs.get(path) else {
            return Ok(());
        };
        let dynamic = DynamicMessage::decode(descriptor.clone(), message).map_err(|err| {
            Status::invalid_argument(format!(
                "request is not a valid {}: {err}",
                descriptor.full_name()
            ))
        })?;
        self.validator
            .validate(&dynamic)
            .map_err(|violations| to_status(&violations))
    }

    fn knows(&self, path: &str) -> bool {
        self.inputs.contains_key(path)
    }
}

/// What the `BadRequest` detail may carry, in bytes of field paths and descriptions. With the
/// `grpc-message` budget below, the whole status (details base64-encoded in
/// `grpc-status-details-bin`) stays near 5 KiB for any input, well under the 8 KiB of response
/// metadata that common gRPC clients (grpcio, grpc-go) accept before failing the call.
const DETAILS_BUDGET: usize = 2048;
/// What the `grpc-message` text may carry, in bytes before percent-encoding (which can
/// triple them: tonic encodes spaces too).
const MESSAGE_BUDGET: usize = 512;
/// The longest field path or description one violation may show.
const ITEM_BUDGET: usize = 200;

/// `s` cut to at most `max` bytes at a character boundary, marked when cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// `INVALID_ARGUMENT` with one `BadRequest` field violation per broken rule, as many as fit in
/// a fixed budget; the message says how many were left out.
fn to_status(violations: &shop_validate::Violations) -> Status {
    use tonic_types::{ErrorDetails, StatusExt as _};
    let total = violations.violations.len() + violations.omitted;
    let mut details = ErrorDetails::new();
    let (mut detail_bytes, mut shown) = (0, 0);
    let (mut message, mut listed) = (String::new(), 0);
    for violation in &violations.violations {
        let field = clip(&violation.field, ITEM_BUDGET);
        let description = clip(
            &format!("{} [{}]", violation.message, violation.rule),
            ITEM_BUDGET,
        );
        detail_bytes += field.len() + description.len();
        if detail_bytes > DETAILS_BUDGET {
            break;
        }
        let line = format!("{field}: {}", clip(&violation.message, ITEM_BUDGET));
        if message.len() + line.len() + 2 <= MESSAGE_BUDGET {
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(&line);
            listed += 1;
        }
        details.add_bad_request_violation(field, description);
        shown += 1;
    }
    if listed < total {
        message.push_str(&format!(
            " ({total} violations, the first {shown} in the details)"
        ));
    }
    Status::with_error_details(tonic::Code::InvalidArgument, message, details)
}

/// Validates requests with a [`RequestValidator`].
#[derive(Debug, Clone)]
pub struct ValidationLayer {
    validator: RequestValidator,
}

impl ValidationLayer {
    /// A layer enforcing `validator`'s rules.
    #[must_use]
    pub fn new(validator: RequestValidator) -> Self {
        Self { validator }
    }
}

impl<S> tower_layer::Layer<S> for ValidationLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Validate {
            inner,
            validator: self.validator.clone(),
        }
    }
}

/// The service made by [`ValidationLayer`].
#[derive(Debug, Clone)]
pub struct Validate<S> {
    inner: S,
    validator: RequestValidator,
}

// === impl Validate ===

/// The single gRPC frame of `buffered`: `Ok(None)` when the frame is compressed (tonic decides
/// what to do with it), `Err` when the framing itself is broken.
fn single_frame(mut buffered: Bytes) -> Result<Option<Bytes>, Status> {
    if buffered.len() < 5 {
        return Err(Status::invalid_argument(
            "request body is not a gRPC message",
        ));
    }
    let compressed = buffered.get_u8();
    let length = buffered.get_u32() as usize;
    if compressed != 0 {
        return Ok(None);
    }
    if buffered.len() != length {
        return Err(Status::invalid_argument(
            "request body must hold exactly one gRPC message",
        ));
    }
    Ok(Some(buffered))
}

impl<S> tower_service::Service<Request<Body>> for Validate<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let path = request.uri().path().to_owned();
        if !self.validator.knows(&path) {
            return Box::pin(self.inner.call(request));
        }
        // The clone that was polled ready serves this call; the fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let validator = self.validator.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let limit = validator.max_message_bytes.saturating_add(5);
            let buffered = match Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(err) => {
                    let status = if err.is::<http_body_util::LengthLimitError>() {
                        Status::resource_exhausted(format!(
                            "request message larger than {} bytes",
                            validator.max_message_bytes
                        ))
                    } else {
                        Status::cancelled(format!("request body could not be read: {err}"))
                    };
                    return Ok(status.into_http());
                }
            };
            let verdict = single_frame(buffered.clone())
                .and_then(|frame| frame.map_or(Ok(()), |msg| validator.check(&path, &msg)));
            if let Err(status) = verdict {
                return Ok(status.into_http());
            }
            let request = Request::from_parts(parts, Body::new(Full::new(buffered)));
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{single_frame, to_status};
    use bytes::{BufMut, Bytes, BytesMut};
    use shop_validate::{MAX_VIOLATIONS, Violation, Violations};
    use tonic_types::StatusExt as _;

    /// The bytes the status takes on the wire as response metadata.
    fn metadata_bytes(status: &tonic::Status) -> usize {
        let http = status.clone().into_http::<tonic::body::Body>();
        http.headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum()
    }

    #[test]
    fn the_status_stays_small_however_bad_the_input() {
        // The worst a Violations can be: as many as kept, each with a huge path and message.
        let huge = "x".repeat(100_000);
        let violations = Violations {
            violations: (0..MAX_VIOLATIONS)
                .map(|i| Violation {
                    field: format!("{huge}[{i}]"),
                    rule: "string.pattern".into(),
                    message: huge.clone(),
                })
                .collect(),
            omitted: 1_000_000,
        };
        let status = to_status(&violations);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            metadata_bytes(&status) < 6 * 1024,
            "{}",
            metadata_bytes(&status)
        );
        assert!(
            status.message().contains("1000020 violations"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn ordinary_violations_are_all_shown() {
        let violations = Violations {
            violations: (0..MAX_VIOLATIONS)
                .map(|i| Violation {
                    field: format!("product_ids[{i}]"),
                    rule: "string.uuid".into(),
                    message: "value must be a valid UUID".into(),
                })
                .collect(),
            omitted: 0,
        };
        let status = to_status(&violations);
        assert!(
            status
                .message()
                .starts_with("product_ids[0]: value must be a valid UUID; ")
        );
        assert!(
            status
                .message()
                .ends_with("(20 violations, the first 20 in the details)"),
            "{}",
            status.message()
        );
        let details = status.get_details_bad_request().unwrap();
        assert_eq!(details.field_violations.len(), MAX_VIOLATIONS);
        assert!(
            metadata_bytes(&status) < 4 * 1024,
            "{}",
            metadata_bytes(&status)
        );
    }

    fn frame(flag: u8, payload: &[u8], declared: u32) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(flag);
        buf.put_u32(declared);
        buf.put_slice(payload);
        buf.freeze()
    }

    #[test]
    fn reads_one_uncompressed_frame() {
        let payload = single_frame(frame(0, b"abc", 3)).unwrap();
        assert_eq!(payload.as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn leaves_compressed_frames_to_tonic() {
        assert!(single_frame(frame(1, b"abc", 3)).unwrap().is_none());
    }

    #[test]
    fn rejects_broken_framing() {
        assert!(single_frame(Bytes::from_static(b"\0\0")).is_err());
        assert!(single_frame(frame(0, b"abc", 9)).is_err());
    }
}
