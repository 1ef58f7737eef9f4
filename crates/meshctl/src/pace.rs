//! Pacing and progress of `meshctl load`: an optional fixed call rate shared by all workers,
//! and a one-line progress report once a second.
//!
//! With a rate, call `n` is due at `start + n / rate` whichever worker makes it, so the rate
//! holds while calls are fast, and the workers (the concurrency) cap how many are in flight
//! when they are not: a slow server then gets fewer calls, and the report shows it.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When each call may start.
#[derive(Debug, Clone)]
pub struct Pace {
    started: Instant,
    /// Calls per second, `None` for back to back.
    rate: Option<f64>,
    next_call: Arc<AtomicU64>,
}

impl Pace {
    /// A schedule from `started` at `rate` calls per second (back to back when `None`).
    #[must_use]
    pub fn new(started: Instant, rate: Option<f64>) -> Self {
        Self {
            started,
            rate: rate.filter(|r| r.is_finite() && *r > 0.0),
            next_call: Arc::new(AtomicU64::new(0)),
        }
    }

    /// When the next call is due, counted from `started`; zero without a rate.
    pub fn next_due(&self) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        Duration::from_secs_f64(call as f64 / rate)
    }

    /// Waits until the next call is due; `false` when that is at or after `end` (from start).
    pub async fn wait_turn(&self, end: Duration) -> bool {
        let due = self.next_due();
        if due >= end || self.started.elapsed() >= end {
            return false;
        }
        tokio::time::sleep_until((self.started + due).into()).await;
        true
    }
}

/// How a call ended, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    /// It succeeded.
    Ok,
    /// A rate limit turned it away (waited out, not a failure).
    Throttled,
    /// It failed.
    Failed,
}

/// Calls finished so far, shared by the workers and the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    ok: AtomicU64,
    throttled: AtomicU64,
    failed: AtomicU64,
}

impl Progress {
    /// Counts a finished call.
    pub fn record(&self, end: CallEnd) {
        let counter = match end {
            CallEnd::Ok => &self.ok,
            CallEnd::Throttled => &self.throttled,
            CallEnd::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `  3.0s / 10.0s  1234 ok  5 throttled  0 failed  411 ok/s`.
    #[must_use]
    pub fn line(&self, elapsed: Duration, total: Duration) -> String {
        let ok = self.ok.load(Ordering::Relaxed);
        let throttled = self.throttled.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let rate = ok as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
        format!(
            "  {:.1}s / {:.1}s  {ok} ok  {throttled} throttled  {failed} failed  {rate:.0} ok/s",
            elapsed.as_secs_f64(),
            total.as_secs_f64()
        )
    }

    /// Prints [`Self::line`] on stderr every second until `total` has passed: rewritten in
    /// place on a terminal, one line each otherwise.
    pub async fn show(self: Arc<Self>, started: Instant, total: Duration) {
        let terminal = std::io::stderr().is_terminal();
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.tick().await;
        while started.elapsed() < total {
            ticks.tick().await;
            let line = self.line(started.elapsed().min(total), total);
            let mut stderr = std::io::stderr().lock();
            let _ = if terminal {
                write!(stderr, "\r{line}\x1b[K")
            } else {
                writeln!(stderr, "{line}")
            };
            let _ = stderr.flush();
        }
        if terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_spread_at_the_rate() {
        let pace = Pace::new(Instant::now(), Some(4.0));
        let due: Vec<u128> = (0..5).map(|_| pace.next_due().as_millis()).collect();
        assert_eq!(due, [0, 250, 500, 750, 1000]);
        let back_to_back = Pace::new(Instant::now(), None);
        assert_eq!(back_to_back.next_due(), Duration::ZERO);
        assert_eq!(
            Pace::new(Instant::now(), Some(0.0)).next_due(),
            Duration::ZERO
        );
    }

    #[tokio::test]
    async fn no_turn_after_the_end() {
        let pace = Pace::new(Instant::now(), Some(1.0));
        assert!(
            pace.wait_turn(Duration::from_millis(500)).await,
            "call 0 at 0 s"
        );
        assert!(
            !pace.wait_turn(Duration::from_millis(500)).await,
            "call 1 at 1 s"
        );
    }

    #[test]
    fn the_progress_line_counts_calls() {
        let progress = Progress::default();
        for end in [
            CallEnd::Ok,
            CallEnd::Ok,
            CallEnd::Throttled,
            CallEnd::Failed,
        ] {
            progress.record(end);
        }
        let line = progress.line(Duration::from_secs(2), Duration::from_secs(10));
        assert_eq!(line, "  2.0s / 10.0s  2 ok  1 throttled  1 failed  1 ok/s");
    }
}
