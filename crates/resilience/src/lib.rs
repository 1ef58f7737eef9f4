//! Resilience for gRPC calls between shop services: tower layers that every client and server in
//! the mesh uses through `shop-runtime`.
//!
//! Every layer works on `http::Request<B>` / `http::Response<tonic::body::Body>`, so it sits
//! under a generated tonic client or around a `tonic::transport::Server`. Local rejections
//! (breaker open, bulkhead full, shed, rate limited, deadline exceeded) are answered as
//! trailers-only gRPC responses carrying a [`Rejection`] extension, so a tonic client sees the
//! right `Status` code and outer layers can tell a local rejection from a remote answer.
//!
//! # Layout
//!
//! - [`classify`]: what a response or error means (`grpc-status` in headers, transport errors).
//! - [`breaker`]: circuit breaker (closed / open / half-open) with a cheap state handle.
//! - [`retry`]: tower's retry with a [`tower::retry::budget::TpsBudget`], full-jitter backoff,
//!   idempotent methods only, never past the deadline.
//! - [`deadline`]: `grpc-timeout` in (server) and out (client); [`deadline::current`].
//! - [`bulkhead`]: per-dependency concurrency limit with a bounded, timed wait queue.
//! - [`eject`]: per-endpoint outlier ejection used under the balancer.
//! - [`balance`]: p2c over endpoints from DNS (re-resolved) or a static list.
//! - [`client`]: [`client::DependencyConfig`] and [`client::connect`], the composed client stack.
//! - [`server`]: server protection (deadline, per-caller GCRA rate limit, concurrency limit +
//!   load shedding) composed as [`server::ServerLayer`].

pub mod balance;
pub mod breaker;
pub mod bulkhead;
pub mod classify;
pub mod client;
pub mod deadline;
pub mod eject;
pub mod rate_limit;
pub mod retry;
pub mod server;
pub mod shed;

mod rejection;

pub use rejection::{RejectOr, Rejection};

/// The boxed error type used where layers erase their inner error (balancer, load shedding).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
