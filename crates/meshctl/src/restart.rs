//! When to restart a service that exited on its own: exponential backoff, as Kubernetes'
//! `CrashLoopBackOff` does, with smaller numbers for a laptop.
//!
//! The first restart waits [`RestartPolicy::initial`], each further one twice as long up to
//! [`RestartPolicy::max`]. A service that ran for [`RestartPolicy::reset_after`] before it
//! exited counts as healthy again: its next restart waits the initial delay.

use std::time::Duration;

/// The backoff of one service's restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first restart.
    pub initial: Duration,
    /// Longest delay between restarts.
    pub max: Duration,
    /// Run time after which a crash counts as the first again.
    pub reset_after: Duration,
    /// Restarts in a row without a healthy run in between.
    consecutive: u32,
}

impl Default for RestartPolicy {
    /// 1 s, doubling to 30 s, reset after a minute of running.
    fn default() -> Self {
        Self::new(
            Duration::from_secs(1),
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
    }
}

impl RestartPolicy {
    /// A policy starting at `initial`, doubling up to `max`, reset after `reset_after` of run.
    #[must_use]
    pub const fn new(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Self {
            initial,
            max,
            reset_after,
            consecutive: 0,
        }
    }

    /// The wait before restarting a service that exited after running for `ran_for`.
    pub fn delay_after_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.reset_after {
            self.consecutive = 0;
        }
        let factor = 2u32.saturating_pow(self.consecutive);
        self.consecutive = self.consecutive.saturating_add(1);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut policy = RestartPolicy::default();
        let delays: Vec<u64> = (0..8)
            .map(|_| {
                policy
                    .delay_after_exit(Duration::from_millis(100))
                    .as_secs()
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_long_run_resets_the_backoff() {
        let mut policy = RestartPolicy::default();
        for _ in 0..4 {
            policy.delay_after_exit(Duration::ZERO);
        }
        assert_eq!(
            policy.delay_after_exit(Duration::from_secs(61)),
            Duration::from_secs(1)
        );
        assert_eq!(
            policy.delay_after_exit(Duration::from_secs(1)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn never_overflows() {
        let mut policy = RestartPolicy::default();
        for _ in 0..100 {
            assert!(policy.delay_after_exit(Duration::ZERO) <= Duration::from_secs(30));
        }
    }
}
