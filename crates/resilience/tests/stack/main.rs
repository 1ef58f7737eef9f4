//! Integration tests of the resilience layers, compiled as one binary.

// Helpers outside `#[test]` functions are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod balance;
mod breaker;
mod bulkhead;
mod retry;
mod server;
mod support;
