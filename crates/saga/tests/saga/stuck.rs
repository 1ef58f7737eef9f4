//! Runs that can make no progress are parked `stuck`, visible, and put back by an operator;
//! a compensation that keeps failing transiently is retried with a bounded rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::FutureExt as _;
use shop_saga::store::{self, StuckRun};
use shop_saga::{RetryPolicy, RunStatus, Saga, StepError, StepInput, Worker};
use tokio_util::sync::CancellationToken;

use crate::common::*;

#[tokio::test]
async fn corrupt_runs_are_parked_stuck_with_their_error_not_retried() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    let saga = || {
        Saga::new("order")
            .compensated_step("reserve", ok(&journal), ok(&journal))
            .step("confirm", ok(&journal))
    };
    let undecodable = start(&pool, "order").await?;
    sqlx::query("UPDATE saga_runs SET data = '\"not an order\"' WHERE id = $1")
        .bind(undecodable)
        .execute(&pool)
        .await?;
    let out_of_range = start(&pool, "order").await?;
    sqlx::query(
        "UPDATE saga_runs SET status = 'compensating', step = 99, failure = 'x' WHERE id = $1",
    )
    .bind(out_of_range)
    .execute(&pool)
    .await?;

    let worker = Worker::new(pool.clone(), saga(), config(Duration::from_secs(30)));
    assert_eq!(
        worker.run_once().await?,
        1,
        "the undecodable one is parked at claim"
    );
    assert_eq!(status(&pool, undecodable).await, RunStatus::Stuck);
    assert_eq!(status(&pool, out_of_range).await, RunStatus::Stuck);
    assert!(journal.entries().is_empty(), "no step ran");
    // Stuck runs are never claimed again.
    assert_eq!(worker.run_once().await?, 0);

    let mut stuck = store::stuck(&pool, "order", 10).await?;
    stuck.sort_by_key(|s| s.id != undecodable);
    assert_eq!(stuck.len(), 2);
    assert_eq!(stuck[0].id, undecodable);
    assert!(
        stuck[0].error.starts_with("corrupt: saga data:"),
        "{}",
        stuck[0].error
    );
    assert_eq!(
        stuck[1],
        StuckRun {
            id: out_of_range,
            error: "corrupt: compensating at step 99 of 2".to_owned()
        }
    );
    assert_eq!(store::counts(&pool, "order").await?["stuck"], 2);
    Ok(())
}

#[tokio::test]
async fn a_stuck_run_is_put_back_by_an_operator_and_finishes() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    // `release` fails for good until an operator has fixed inventory.
    let fixed = Arc::new(AtomicBool::new(false));
    let release = {
        let (journal, fixed) = (journal.clone(), fixed.clone());
        move |input: StepInput<Order>| {
            journal.push(&input.idempotency_key);
            let fixed = fixed.load(Ordering::SeqCst);
            async move {
                if fixed {
                    Ok(input.data)
                } else {
                    Err(StepError::Failed("reservation unknown".into()))
                }
            }
            .boxed()
        }
    };
    let saga = Saga::new("order")
        .compensated_step("reserve", ok(&journal), release)
        .step("authorize", fails(&journal));
    let id = start(&pool, "order").await?;
    let worker = Worker::new(pool.clone(), saga, config(Duration::from_secs(30)));
    run_until_final(&pool, &worker, id).await?;
    assert_eq!(status(&pool, id).await, RunStatus::Stuck);
    assert_eq!(
        store::stuck(&pool, "order", 10).await?,
        [StuckRun {
            id,
            error: "reserve: reservation unknown".to_owned()
        }]
    );
    assert!(!store::retry_stuck(&pool, uuid::Uuid::new_v4()).await?);

    fixed.store(true, Ordering::SeqCst);
    assert!(store::retry_stuck(&pool, id).await?);
    assert!(!store::retry_stuck(&pool, id).await?, "no longer stuck");
    assert_eq!(status(&pool, id).await, RunStatus::Compensating);
    run_until_final(&pool, &worker, id).await?;
    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(run.status, RunStatus::Compensated);
    assert_eq!(
        journal.steps(),
        [
            "reserve",
            "authorize",
            "reserve:compensate",
            "reserve:compensate"
        ]
    );
    assert!(store::stuck(&pool, "order", 10).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_compensation_failing_transiently_is_retried_with_backoff_not_in_a_hot_loop() -> Result<()>
{
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    let attempts = Arc::new(AtomicU32::new(0));
    let release = {
        let attempts = attempts.clone();
        move |_: StepInput<Order>| {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err(StepError::Transient("inventory unavailable".into())) }.boxed()
        }
    };
    let policy = RetryPolicy {
        max_attempts: 1,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(80),
    };
    let saga = Saga::new("order")
        .compensated_step("reserve", ok(&journal), release)
        .step("authorize", fails(&journal))
        .retry(policy.clone());
    let id = start(&pool, "order").await?;
    // A worker that polls every millisecond: only the backoff limits the retries.
    let worker = Worker::new(
        pool.clone(),
        saga,
        shop_saga::WorkerConfig {
            poll: Duration::from_millis(1),
            ..config(Duration::from_secs(30))
        },
    );
    let stop = CancellationToken::new();
    let began = Instant::now();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(stop).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    running.await??;
    let window = began.elapsed();
    let attempts = attempts.load(Ordering::SeqCst);

    // Waits are at least half the (capped) exponential: 10, 20, then 40 ms or more.
    let floor = policy.max_backoff / 2;
    let bound = 3 + u32::try_from(window.as_millis() / floor.as_millis()).unwrap();
    assert!(attempts >= 2, "the compensation is retried ({attempts})");
    assert!(
        attempts <= bound,
        "{attempts} attempts in {window:?}: more than {bound}"
    );
    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(
        run.status,
        RunStatus::Compensating,
        "still retrying, not given up"
    );
    assert_eq!(run.last_error.as_deref(), Some("inventory unavailable"));
    assert!(
        run.lease_epoch >= i64::from(attempts),
        "waits longer than the poll release the run: each retry is a new claim"
    );
    let transient = history(&pool, id)
        .await
        .iter()
        .filter(|(_, phase, outcome, _)| *phase == "compensation" && *outcome == "transient")
        .count();
    assert_eq!(
        transient,
        usize::try_from(attempts)?,
        "every attempt is in the history"
    );
    Ok(())
}
