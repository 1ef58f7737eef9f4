//! Opaque page tokens: a protobuf cursor message, base64url-encoded.
//!
//! Clients pass tokens back unchanged; a token that does not decode is the client's error
//! (`INVALID_ARGUMENT` on `page_token`), never a server fault.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

/// A page token that is not one this service issued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("page_token is malformed")]
pub struct MalformedPageToken;

/// The token for `cursor`.
#[must_use]
pub fn encode<M: prost::Message>(cursor: &M) -> String {
    URL_SAFE_NO_PAD.encode(cursor.encode_to_vec())
}

/// The cursor in `token`; `Ok(None)` for the empty token (the first page).
pub fn decode<M: prost::Message + Default>(token: &str) -> Result<Option<M>, MalformedPageToken> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| MalformedPageToken)?;
    if bytes.is_empty() {
        return Err(MalformedPageToken);
    }
    M::decode(bytes.as_slice())
        .map(Some)
        .map_err(|_| MalformedPageToken)
}

/// FNV-1a: a stable hash binding a page token to the filter it was issued for, so a token
/// reused with another filter is refused instead of silently paging something else. Stable
/// across builds and replicas, unlike `std`'s hasher.
#[must_use]
pub fn filter_hash(filter: &str) -> u64 {
    filter
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Page size to use for a request's `page_size` (0 means the default).
#[must_use]
pub fn page_size(requested: i32, default: u32, max: u32) -> u32 {
    match u32::try_from(requested) {
        Ok(0) | Err(_) => default,
        Ok(n) => n.min(max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Cursor {
        #[prost(string, tag = "1")]
        after: String,
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let token = encode(&Cursor { after: "x".into() });
        assert_eq!(decode::<Cursor>(&token).unwrap().unwrap().after, "x");
        assert_eq!(decode::<Cursor>("").unwrap(), None);
        assert_eq!(decode::<Cursor>("!!not base64!!"), Err(MalformedPageToken));
        assert_eq!(decode::<Cursor>("_w"), Err(MalformedPageToken));
    }

    #[test]
    fn filter_hash_is_stable_and_discriminates() {
        assert_eq!(filter_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(filter_hash("shoes"), filter_hash("shirts"));
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page_size(0, 20, 100), 20);
        assert_eq!(page_size(500, 20, 100), 100);
        assert_eq!(page_size(7, 20, 100), 7);
    }
}
