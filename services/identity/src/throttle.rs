//! Throttling of failed logins, per account and per peer.
//!
//! Only failures count: each one takes a cell from a GCRA limiter (`governor`) keyed by the
//! account's email, and one keyed by the caller's IP address. When a failure empties a key's
//! burst, the key is locked until its next cell is due, and a locked key's logins are refused
//! before any password is checked (with RESOURCE_EXHAUSTED and RetryInfo), so a correct guess
//! does not get through a lockout, and a lockout costs no hashing. Unknown emails are counted
//! like known ones, so a lockout does not tell whether an account exists.
//!
//! governor answers "may one more cell pass now?" only by taking the cell, so the lock times
//! are kept here beside it: only keys locked now have an entry, pruned as they expire.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _,
    middleware::StateInformationMiddleware,
};

use crate::{config::PasswordConfig, error::IdentityError};

/// Failures between prunings of idle limiter state.
const PRUNE_EVERY: u64 = 1024;
/// Locks kept before expired ones are swept out.
const SWEEP_ABOVE: usize = 1024;

/// Failed-login throttles of one identity process.
#[derive(Debug)]
pub struct LoginThrottle {
    accounts: KeyedThrottle<String>,
    peers: KeyedThrottle<IpAddr>,
}

impl LoginThrottle {
    /// Throttles with the quotas in `config`.
    pub fn new(config: &PasswordConfig) -> Self {
        Self {
            accounts: KeyedThrottle::new(
                config.login_failures_per_account,
                Duration::from_secs(config.login_account_forgive_secs),
            ),
            peers: KeyedThrottle::new(
                config.login_failures_per_peer,
                Duration::from_secs(config.login_peer_forgive_secs),
            ),
        }
    }

    /// Refuses a login for `email` from `peer` while either is locked.
    pub fn admit(&self, email: &str, peer: Option<IpAddr>) -> Result<(), IdentityError> {
        let now = Instant::now();
        let locked = [
            self.accounts.locked_for(email, now),
            peer.and_then(|ip| self.peers.locked_for(&ip, now)),
        ];
        match locked.into_iter().flatten().max() {
            Some(retry_after) => Err(IdentityError::TooManyFailures { retry_after }),
            None => Ok(()),
        }
    }

    /// Counts a failed login of `email` from `peer`.
    pub fn record_failure(&self, email: &str, peer: Option<IpAddr>) {
        self.accounts.record_failure(email);
        if let Some(ip) = peer {
            self.peers.record_failure(&ip);
        }
    }
}

/// One limiter and the keys it has locked.
#[derive(Debug)]
struct KeyedThrottle<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K, StateInformationMiddleware>,
    /// One failure's worth of time: how long a key whose burst is spent stays locked.
    interval: Duration,
    locked_until: Mutex<HashMap<K, Instant>>,
    failures: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedThrottle<K> {
    fn new(burst: u32, forgive_one_per: Duration) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(forgive_one_per)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            interval: quota.replenish_interval(),
            locked_until: Mutex::new(HashMap::new()),
            failures: AtomicU64::new(0),
        }
    }

    fn locks(&self) -> std::sync::MutexGuard<'_, HashMap<K, Instant>> {
        self.locked_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How long `key` stays locked, if it is.
    fn locked_for<Q>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let until = *self.locks().get(key)?;
        (until > now).then(|| until - now)
    }

    fn record_failure<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.failures.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
        }
        let key = key.to_owned();
        let lock_for = match self.limiter.check_key(&key) {
            // The burst is spent: the next failure may come when one cell is due, at most
            // one interval from now.
            Ok(state) if state.remaining_burst_capacity() == 0 => self.interval,
            Ok(_) => return,
            // Concurrent failures overtook the lock: wait out what governor says.
            Err(not_until) => not_until.wait_time_from(self.limiter.clock().now()),
        };
        let now = Instant::now();
        let mut locks = self.locks();
        if locks.len() > SWEEP_ABOVE {
            locks.retain(|_, until| *until > now);
        }
        locks.insert(key, now + lock_for);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_locked_once_its_burst_of_failures_is_spent_and_others_are_not() {
        let throttle = KeyedThrottle::<String>::new(3, Duration::from_secs(3600));
        let now = Instant::now();
        for _ in 0..2 {
            throttle.record_failure("ada");
            assert_eq!(throttle.locked_for("ada", now), None);
        }
        throttle.record_failure("ada");
        let locked = throttle.locked_for("ada", Instant::now());
        assert!(locked.is_some_and(|left| left > Duration::from_secs(3500)));
        assert_eq!(throttle.locked_for("bob", Instant::now()), None);
    }

    #[test]
    fn a_lock_ends_when_its_time_is_up() {
        let throttle = KeyedThrottle::<String>::new(1, Duration::from_secs(60));
        throttle.record_failure("ada");
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(throttle.locked_for("ada", later), None);
    }
}
