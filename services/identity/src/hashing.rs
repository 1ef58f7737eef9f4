//! A bound on argon2 work running at once.
//!
//! Each hash or verification holds ~19 MiB for its whole run, so the number running at once,
//! not the number of calls in flight, is what decides identity's memory. A call waits at most
//! a short while for a slot and is then refused (RESOURCE_EXHAUSTED with RetryInfo) instead of
//! queueing behind the blocking pool.
//!
//! What cancellation can do: argon2 runs on a blocking thread and cannot be interrupted, so a
//! hash that has started finishes even if its call is cancelled; the slot moves into the
//! blocking task and is freed exactly when the hash ends, which is when its memory is. What a
//! cancelled call does give up: its wait for a slot, and a hash that has not started yet (the
//! task checks whether anyone still waits for it before hashing).

use std::{sync::Arc, time::Duration};

use tokio::sync::{Semaphore, oneshot};

use crate::error::IdentityError;

/// Runs CPU- and memory-heavy credential work on the blocking pool, a bounded number at once.
#[derive(Debug, Clone)]
pub struct HashPool {
    slots: Arc<Semaphore>,
    max_wait: Duration,
}

impl HashPool {
    /// At most `concurrency` jobs at once; a job waits at most `max_wait` for a slot.
    pub fn new(concurrency: usize, max_wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            max_wait,
        }
    }

    /// Slots free now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Runs `work` once a slot is free, or fails with [`IdentityError::HashingBusy`].
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, IdentityError> + Send + 'static,
    ) -> Result<T, IdentityError> {
        // A zero wait still takes a free slot: timeout polls the acquire once first.
        let slot = match tokio::time::timeout(
            self.max_wait,
            Arc::clone(&self.slots).acquire_owned(),
        )
        .await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(closed)) => return Err(IdentityError::Crypto(closed.to_string())),
            Err(_) => {
                return Err(IdentityError::HashingBusy {
                    retry_after: self.max_wait.max(Duration::from_millis(100)),
                });
            }
        };
        let (done, result) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            if done.is_closed() {
                return; // the call was cancelled before a blocking thread picked this up
            }
            let outcome = work();
            // Free the slot before the caller sees the result, so a caller that goes on to
            // hash again finds the slot it just used free.
            drop(slot);
            let _ = done.send(outcome);
        });
        result
            .await
            .map_err(|_| IdentityError::Crypto("hashing task ended without a result".into()))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    };

    use super::*;

    #[tokio::test]
    async fn beyond_the_limit_a_call_is_refused_after_the_wait() {
        let pool = HashPool::new(1, Duration::from_millis(20));
        let (release, hold) = mpsc::channel::<()>();
        let busy = pool.clone();
        let first = tokio::spawn(async move {
            busy.run(move || {
                let _ = hold.recv();
                Ok(())
            })
            .await
        });
        while pool.available() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = pool.run(|| Ok(())).await;
        assert!(matches!(refused, Err(IdentityError::HashingBusy { .. })));
        release.send(()).ok();
        assert!(matches!(first.await, Ok(Ok(()))));
        assert_eq!(pool.available(), 1);
        assert!(pool.run(|| Ok(())).await.is_ok());
    }

    #[tokio::test]
    async fn a_cancelled_call_keeps_its_slot_only_while_its_hash_runs() {
        let pool = HashPool::new(1, Duration::from_secs(1));
        let (release, hold) = mpsc::channel::<()>();
        let started = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&started);
        let call = pool.run(move || {
            flag.store(true, Ordering::SeqCst);
            let _ = hold.recv();
            Ok(())
        });
        // Cancel the call once its hash is running.
        tokio::select! {
            _ = call => unreachable!("the hash is held"),
            () = async { while !started.load(Ordering::SeqCst) { tokio::task::yield_now().await } } => {}
        }
        assert_eq!(
            pool.available(),
            0,
            "the running hash still holds its memory"
        );
        release.send(()).ok();
        while pool.available() == 0 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn a_call_cancelled_before_its_hash_starts_never_hashes() -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .enable_time()
            .build()?;
        runtime.block_on(async {
            let pool = HashPool::new(2, Duration::from_secs(1));
            // Occupy the only blocking thread, so the next job queues.
            let (release, hold) = mpsc::channel::<()>();
            let blocker = tokio::task::spawn_blocking(move || {
                let _ = hold.recv();
            });
            let hashed = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&hashed);
            let call = pool.run(move || {
                flag.store(true, Ordering::SeqCst);
                Ok(())
            });
            // Let the call take its slot and queue its job, then cancel it.
            let _ = tokio::time::timeout(Duration::from_millis(50), call).await;
            assert_eq!(pool.available(), 1, "the queued job holds its slot");
            release.send(()).ok();
            let _ = blocker.await;
            while pool.available() < 2 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(
                !hashed.load(Ordering::SeqCst),
                "nobody waited for that hash"
            );
        });
        Ok(())
    }
}
