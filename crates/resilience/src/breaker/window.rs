//! A time-based sliding window of call outcomes, kept as a ring of fixed-width buckets.

use std::time::Duration;

use tokio::time::Instant;

/// Number of buckets the window is split into; the window slides one bucket at a time.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    calls: u32,
    failures: u32,
}

/// Calls and failures over the last `width` of time.
#[derive(Debug)]
pub(crate) struct Window {
    origin: Instant,
    bucket_width: Duration,
    buckets: [Bucket; BUCKETS],
}

// === impl Window ===

impl Window {
    pub(crate) fn new(width: Duration) -> Self {
        let bucket_width = (width / BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            origin: Instant::now(),
            bucket_width,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// Forgets everything recorded so far.
    pub(crate) fn reset(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }

    /// Records one call; returns `(calls, failures)` over the window, including this one.
    pub(crate) fn record(&mut self, now: Instant, failed: bool) -> (u32, u32) {
        let epoch = self.epoch(now);
        let bucket = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        bucket.failures = bucket.failures.saturating_add(u32::from(failed));
        self.totals(epoch)
    }

    fn totals(&self, epoch: u64) -> (u32, u32) {
        let oldest = epoch.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.epoch >= oldest && b.epoch <= epoch)
            .fold((0, 0), |(calls, failures), b| {
                (calls + b.calls, failures + b.failures)
            })
    }

    fn epoch(&self, now: Instant) -> u64 {
        // Epoch 0 is reserved for "never used"; real buckets start at 1.
        let elapsed = now.saturating_duration_since(self.origin);
        (elapsed.as_nanos() / self.bucket_width.as_nanos().max(1)) as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn old_buckets_slide_out() {
        let mut window = Window::new(Duration::from_secs(10));
        let now = Instant::now();
        assert_eq!(window.record(now, true), (1, 1));
        assert_eq!(window.record(now + Duration::from_secs(5), false), (2, 1));
        // 10.5 s later the first call's bucket has left the window.
        assert_eq!(
            window.record(now + Duration::from_millis(10_500), false),
            (2, 0)
        );
        window.reset();
        assert_eq!(window.record(now + Duration::from_secs(11), true), (1, 1));
    }
}
