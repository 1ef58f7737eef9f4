//! Conversions between protobuf well-known types and the types services store.

use time::OffsetDateTime;

/// `at` as a `google.protobuf.Timestamp`.
#[must_use]
pub fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        // `nanosecond()` is always below 10^9, so it fits an i32.
        nanos: i32::try_from(at.nanosecond()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn keeps_seconds_and_nanos() {
        let at =
            time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let ts = timestamp(at);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_789));
    }
}
