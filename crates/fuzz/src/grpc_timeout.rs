//! The `grpc-timeout` header: any value parses to a duration or to nothing, and what parses
//! round-trips through the encoder without growing.

use http::HeaderValue;
use shop_resilience::deadline::{encode_grpc_timeout, parse_grpc_timeout};

/// Parses `data` as a `grpc-timeout` value.
pub fn parse(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let Some(timeout) = parse_grpc_timeout(&value) else {
        return;
    };
    // Re-encoding picks the finest unit that fits 8 digits, so it can only round down.
    let encoded = encode_grpc_timeout(timeout);
    let again = parse_grpc_timeout(&encoded);
    assert!(
        again.is_some_and(|d| d <= timeout),
        "{value:?} parsed to {timeout:?}, re-encoded as {encoded:?} which parses to {again:?}"
    );
}
