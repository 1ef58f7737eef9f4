//! Background work beside the gRPC server: outbox relays, event consumers, listeners.
//!
//! Such work must survive its dependency being away (NATS restarting, the database failing
//! over) and stop when the service stops. [`retry_until_stopped`] is the one backoff loop for
//! that; [`crate::GrpcServer::run_with_background`] ties the tasks' lifetime to the server's.

use std::{fmt::Display, future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// First pause after a failed attempt; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `attempt` until it returns `Ok` or `stop` is cancelled, logging each failure as
/// `what` and backing off exponentially in between. `true` when an attempt succeeded.
pub async fn retry_until_stopped<F, Fut, E>(
    what: &str,
    stop: &CancellationToken,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut delay = MIN_BACKOFF;
    while !stop.is_cancelled() {
        match attempt().await {
            Ok(()) => return true,
            Err(err) => {
                tracing::warn!(task = what, error = %err, ?delay, "failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return false,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_with_backoff_until_success() {
        let stop = CancellationToken::new();
        let attempts = Arc::new(AtomicU32::new(0));
        let started = tokio::time::Instant::now();
        let counted = attempts.clone();
        let ok = retry_until_stopped("test", &stop, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move { if n < 3 { Err("not yet") } else { Ok(()) } }
        })
        .await;
        assert!(ok);
        assert_eq!(attempts.load(Ordering::SeqCst), 4);
        // 200 + 400 + 800 ms of backoff.
        assert_eq!(started.elapsed(), Duration::from_millis(1400));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_cancelled() {
        let stop = CancellationToken::new();
        let cancel = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        });
        let ok = retry_until_stopped("test", &stop, || async { Err::<(), _>("down") }).await;
        assert!(!ok);
    }
}
