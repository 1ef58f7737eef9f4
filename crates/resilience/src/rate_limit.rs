//! Per-caller rate limiting (GCRA, via `governor`).
//!
//! The caller is who the connection proved to be: the service identity of its mTLS certificate
//! ([`shop_tls::PeerInfo`]), else who an earlier layer authenticated ([`AuthenticatedCaller`]:
//! the end user whose token the service kit verified), else the peer IP address. A header the caller writes itself is no
//! identity (random `x-caller-id` values would each get a fresh quota), so one is only used when
//! configured ([`RateLimitConfig::caller_header`]), for a deployment where a trusted proxy in
//! front sets it. Callers over their quota are
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
use shop_tls::PeerInfo;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};

use crate::{RejectOr, Rejection};

/// Calls between prunings of idle callers.
const PRUNE_EVERY: u64 = 4096;

/// The header the client stack stamps with the calling service's name (informational: the
/// server keys on the verified identity unless told to trust it).
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
    /// A header naming the caller, trusted over the peer's address when set. `None` (the
    /// default): callers are their verified service identity, else their IP address.
    pub caller_header: Option<HeaderName>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::new(DEFAULT_PER_SECOND).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(DEFAULT_BURST).unwrap_or(NonZeroU32::MIN),
            caller_header: None,
        }
    }
}

/// A caller an earlier layer has authenticated other than by the connection, e.g. the end user
/// whose bearer token it verified (`user:<subject>`), put in the request's extensions: it keys
/// the quota when the peer has no service identity, so users behind one address (a NAT, the
/// gateway) each get their own and one user cannot escape theirs by changing address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedCaller(pub String);

/// Longest caller id kept inline in a [`CallerKey`]; longer ones are boxed.
const INLINE_KEY: usize = 46;

/// Who a call is from, as the limiter's key; short names (service names) are stored inline so
/// the per-call lookup does not allocate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CallerKey {
    /// A verified service identity's service name, or a trusted caller header, of at most
    /// [`INLINE_KEY`] bytes.
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    /// A longer one.
    Long(Box<[u8]>),
    /// No caller id: the peer's IP address.
    Ip(IpAddr),
    /// Neither a caller id nor a peer address.
    Unknown,
}

impl CallerKey {
    fn named(id: &[u8]) -> Self {
        let mut bytes = [0; INLINE_KEY];
        match (bytes.get_mut(..id.len()), u8::try_from(id.len())) {
            (Some(prefix), Ok(len)) => {
                prefix.copy_from_slice(id);
                Self::Inline { len, bytes }
            }
            _ => Self::Long(id.into()),
        }
    }
}

#[derive(Debug)]
struct Shared {
    limiter: DefaultKeyedRateLimiter<CallerKey>,
    caller_header: Option<HeaderName>,
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
        let peer = req.extensions().get::<PeerInfo>();
        if let Some(identity) = peer.and_then(|peer| peer.identity.as_ref()) {
            return CallerKey::named(identity.service().as_bytes());
        }
        if let Some(AuthenticatedCaller(caller)) = req.extensions().get::<AuthenticatedCaller>() {
            return CallerKey::named(caller.as_bytes());
        }
        let trusted = self.caller_header.as_ref().and_then(|header| {
            req.headers()
                .get(header)
                .filter(|value| value.to_str().is_ok())
        });
        if let Some(id) = trusted {
            return CallerKey::named(id.as_bytes());
        }
        peer.and_then(|peer| peer.remote_addr)
            .or_else(|| {
                req.extensions()
                    .get::<TcpConnectInfo>()
                    .and_then(TcpConnectInfo::remote_addr)
            })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn request(ip: [u8; 4], user: Option<&str>) -> http::Request<()> {
        let mut request = http::Request::new(());
        request.extensions_mut().insert(PeerInfo {
            remote_addr: Some(std::net::SocketAddr::from((ip, 4000))),
            tls: true,
            identity: None,
        });
        if let Some(user) = user {
            request
                .extensions_mut()
                .insert(AuthenticatedCaller(format!("user:{user}")));
        }
        request
    }

    #[test]
    fn authenticated_users_have_their_own_quota_whatever_their_address() {
        let layer = RateLimitLayer::new(RateLimitConfig {
            per_second: NonZeroU32::MIN,
            burst: NonZeroU32::MIN,
            caller_header: None,
        });
        let shared = &layer.shared;
        assert!(shared.admit(&request([10, 0, 0, 1], Some("ada"))).is_ok());
        // Ada again, from elsewhere: the same quota, spent.
        assert!(shared.admit(&request([10, 0, 0, 2], Some("ada"))).is_err());
        // Bob behind Ada's address: his own.
        assert!(shared.admit(&request([10, 0, 0, 1], Some("bob"))).is_ok());
        // Anonymous calls from that address: the address's quota, apart from the users'.
        assert!(shared.admit(&request([10, 0, 0, 1], None)).is_ok());
        assert!(shared.admit(&request([10, 0, 0, 1], None)).is_err());
    }
}
