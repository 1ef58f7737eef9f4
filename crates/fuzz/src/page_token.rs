//! Page tokens: clients hand back whatever they like; decoding answers a cursor or
//! `MalformedPageToken`, and every token we issue decodes to the cursor it was made from.

use shop_proto::common::PageCursor;

/// Decodes `data` as a page token (lossily as UTF-8, since tokens arrive as protobuf strings).
pub fn decode(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    // Any prost message works as a cursor type; a shared one keeps the target independent of
    // each service's private cursor.
    if let Ok(Some(cursor)) = shop_runtime::page_token::decode::<PageCursor>(&token) {
        let reissued = shop_runtime::page_token::encode(&cursor);
        let decoded = shop_runtime::page_token::decode::<PageCursor>(&reissued);
        // An all-default cursor encodes to zero bytes, which is the empty (first-page) token.
        if reissued.is_empty() {
            assert_eq!(decoded, Ok(None));
        } else {
            assert_eq!(decoded, Ok(Some(cursor)));
        }
    }
}
