//! Per-caller rate limiting (GCRA, via `governor`).
//!
//! The caller is the value of a configurable header (default `x-caller-id`, set by the client
//! stack to the calling service's name) or else the peer IP address. Callers over their quota are
//! answered `RESOURCE_EXHAUSTED` ([`Rejection::RateLimited`]) with `google.rpc.QuotaFailure` and
//! `RetryInfo` details (when the next call would be admitted), so a client can tell its own
//! quota from an unhealthy server and back off for the right time. Idle callers' state is pruned
//! every few thousand calls so the key map stays bounded by the active callers.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::HeaderName;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};

use crate::{RejectOr, Rejection};

/// Calls between prunings of idle callers.
const PRUNE_EVERY: u64 = 4096;

/// The header naming the caller, unless configured otherwise.
pub const CALLER_HEADER: &str = "x-caller-id";

/// Sustained calls per second per caller unless configured otherwise (the one place this
/// default is written: the service kit's flags and the README follow it).
pub const DEFAULT_PER_SECOND: u32 = 1000;

/// Calls a caller may burst above its sustained rate unless configured otherwise.
pub const DEFAULT_BURST: u32 = 200;

/// Quota per caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained calls per second per caller.
    pub per_second: NonZeroU32,
    /// Calls a caller may burst above the sustained rate.
    pub burst: NonZeroU32,
    /// Header that names the caller; the peer IP is used without it.
    pub caller_header: HeaderName,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::new(DEFAULT_PER_SECOND).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(DEFAULT_BURST).unwrap_or(NonZeroU32::MIN),
            caller_header: HeaderName::from_static(CALLER_HEADER),
        }
    }
}

/// Longest caller id kept inline in a [`CallerKey`]; longer ones are boxed.
const INLINE_KEY: usize = 46;

/// Who a call is from, as the limiter's key; short caller ids (service names) are stored inline
/// so the per-call lookup does not allocate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CallerKey {
    /// A caller id of at most [`INLINE_KEY`] bytes.
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    /// A longer caller id.
    Long(Box<[u8]>),
    /// No caller id: the peer's IP address.
    Ip(IpAddr),
    /// Neither a caller id nor a peer address.
    Unknown,
}

#[derive(Debug)]
struct Shared {
    limiter: DefaultKeyedRateLimiter<CallerKey>,
    caller_header: HeaderName,
    calls: AtomicU64,
}

/// Builds [`RateLimit`] services sharing one limiter.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

/// A service limiting each caller to its quota.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

// === impl RateLimitLayer ===

impl RateLimitLayer {
    /// A limiter with `config`'s quota.
    pub fn new(config: RateLimitConfig) -> Self {
        let quota = Quota::per_second(config.per_second).allow_burst(config.burst);
        Self {
            shared: Arc::new(Shared {
                limiter: RateLimiter::keyed(quota),
                caller_header: config.caller_header,
                calls: AtomicU64::new(0),
            }),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

// === impl RateLimit ===

impl Shared {
    fn caller<B>(&self, req: &http::Request<B>) -> CallerKey {
        if let Some(id) = req
            .headers()
            .get(&self.caller_header)
            .filter(|v| v.to_str().is_ok())
        {
            let id = id.as_bytes();
            let mut bytes = [0; INLINE_KEY];
            return match (bytes.get_mut(..id.len()), u8::try_from(id.len())) {
                (Some(prefix), Ok(len)) => {
                    prefix.copy_from_slice(id);
                    CallerKey::Inline { len, bytes }
                }
                _ => CallerKey::Long(id.into()),
            };
        }
        req.extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .map_or(CallerKey::Unknown, |addr| CallerKey::Ip(addr.ip()))
    }

    /// `Err(retry_after)` when the caller is over its quota.
    fn admit<B>(&self, req: &http::Request<B>) -> Result<(), Duration> {
        if self.calls.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&self.caller(req))
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

impl<S, B, RB> Service<http::Request<B>> for RateLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RejectOr<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Err(retry_after) = self.shared.admit(&req) {
            return RejectOr::Rejected {
                rejection: Rejection::RateLimited { retry_after },
            };
        }
        RejectOr::Inner {
            future: self.inner.call(req),
        }
    }
}
