//! Fuzz targets for every parser in the mesh that reads untrusted input.
//!
//! Each target is a plain function from bytes to `()` that panics (through `assert!`) when an
//! invariant breaks, so the same target runs under two drivers:
//! - on stable, under `cargo test`, through proptest (`tests/targets.rs`): a bounded number of
//!   cases per target (`SHOP_FUZZ_CASES`, default small enough for `./scripts/test`);
//! - on nightly, coverage-guided, through cargo-fuzz and libfuzzer (`fuzz/` at the workspace root,
//!   one `fuzz_target!` per function here).
//!
//! The invariants are the service contract for bad input: a parser answers with an error (a
//! request with `INVALID_ARGUMENT`), never a panic, never another status code, and an error
//! stays small enough for any gRPC client to read (the whole status under 8 KiB of headers).
//!
//! | target | reads |
//! |---|---|
//! | [`validation::raw`] | arbitrary bytes as the request of a method chosen from the input |
//! | [`validation::structured`] | well-formed requests of every method, values chosen near the edges rules care about |
//! | [`envelope::headers`] | NATS headers of a delivered event |
//! | [`page_token::decode`] | page tokens clients hand back |
//! | [`grpc_timeout::parse`] | the `grpc-timeout` header |
//! | [`jwt::verify`] | bearer tokens, including validly signed ones with arbitrary contents |

// A fuzz target reports a broken invariant by panicking: that is what both drivers detect.
#![allow(clippy::panic)]

pub mod envelope;
pub mod grpc_timeout;
pub mod jwt;
mod message;
pub mod page_token;
pub mod validation;
