//! The basics: steps in order, compensation in reverse, retries, resuming after a worker dies,
//! several workers sharing runs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::FutureExt as _;
use shop_saga::{RunStatus, Saga, StepError, StepInput, Worker, WorkerConfig};
use shop_testkit::wait_until;
use tokio_util::sync::CancellationToken;

use crate::common::*;

#[tokio::test]
async fn runs_every_step_in_order_and_threads_the_data() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    let saga = Saga::new("order")
        .compensated_step("reserve", ok(&journal), ok(&journal))
        .compensated_step("authorize", ok(&journal), ok(&journal))
        .step("confirm", ok(&journal));
    let id = start(&pool, "order").await?;
    let worker = Worker::new(pool.clone(), saga, config(Duration::from_secs(30)));
    run_until_final(&pool, &worker, id).await?;

    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.data, serde_json::json!({ "touched": 3 }));
    assert_eq!(journal.steps(), ["reserve", "authorize", "confirm"]);
    assert_eq!(journal.entries()[0], format!("{id}:reserve"));
    Ok(())
}

#[tokio::test]
async fn a_failed_step_compensates_completed_steps_in_reverse() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    let saga = Saga::new("order")
        .compensated_step("reserve", ok(&journal), ok(&journal))
        .step("notify", ok(&journal)) // nothing to undo
        .compensated_step("authorize", ok(&journal), ok(&journal))
        .compensated_step("capture", fails(&journal), ok(&journal))
        .step("confirm", ok(&journal));
    let id = start(&pool, "order").await?;
    let worker = Worker::new(pool.clone(), saga, config(Duration::from_secs(30)));
    run_until_final(&pool, &worker, id).await?;

    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(run.status, RunStatus::Compensated);
    assert_eq!(
        run.failure.as_deref(),
        Some("capture: failed: card declined")
    );
    assert_eq!(
        journal.steps(),
        [
            "reserve",
            "notify",
            "authorize",
            "capture",
            "authorize:compensate",
            "reserve:compensate"
        ],
        "the failed step is not compensated; the others are, last first"
    );
    // 3 actions and 2 compensations touched the data.
    assert_eq!(run.data, serde_json::json!({ "touched": 5 }));
    Ok(())
}

#[tokio::test]
async fn transient_failures_are_retried_and_the_step_in_doubt_is_compensated_when_they_persist()
-> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    // `authorize` fails transiently twice, then succeeds (attempts 1, 2 fail; 3 passes).
    let flaky = {
        let journal = journal.clone();
        move |input: StepInput<Order>| {
            journal.push(&format!("{}#{}", input.idempotency_key, input.attempt));
            let attempt = input.attempt;
            let data = input.data;
            async move {
                if attempt < 3 {
                    Err(StepError::Transient("payments unavailable".into()))
                } else {
                    Ok(data)
                }
            }
            .boxed()
        }
    };
    let saga = Saga::new("flaky")
        .compensated_step("reserve", ok(&journal), ok(&journal))
        .compensated_step("authorize", flaky, ok(&journal))
        .retry(fast_retries());
    let id = start(&pool, "flaky").await?;
    let worker = Worker::new(pool.clone(), saga, config(Duration::from_secs(30)));
    run_until_final(&pool, &worker, id).await?;
    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(
        journal.steps(),
        ["reserve", "authorize#1", "authorize#2", "authorize#3"]
    );
    assert_eq!(
        run.lease_epoch, 1,
        "waits shorter than the poll are waited holding the run: one claim"
    );

    // Always transient: after max_attempts the saga gives up and compensates, *including* the
    // step in doubt (payments may have authorized and only the answer was lost).
    let journal = Journal::default();
    let down = {
        let journal = journal.clone();
        move |input: StepInput<Order>| {
            journal.push(&input.idempotency_key);
            async { Err(StepError::Transient("payments unavailable".into())) }.boxed()
        }
    };
    let saga = Saga::new("down")
        .compensated_step("reserve", ok(&journal), ok(&journal))
        .compensated_step("authorize", down, ok(&journal))
        .retry(fast_retries());
    let id = start(&pool, "down").await?;
    let worker = Worker::new(pool.clone(), saga, config(Duration::from_secs(30)));
    run_until_final(&pool, &worker, id).await?;
    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(run.status, RunStatus::Compensated);
    assert_eq!(run.last_error.as_deref(), Some("payments unavailable"));
    assert_eq!(
        run.failure.as_deref(),
        Some("authorize: transient: payments unavailable")
    );
    assert_eq!(
        journal.steps(),
        [
            "reserve",
            "authorize",
            "authorize",
            "authorize",
            "authorize:compensate",
            "reserve:compensate"
        ],
        "the step whose outcome is unknown is compensated too"
    );
    assert_eq!(
        history(&pool, id).await,
        [
            ("reserve".to_owned(), "action", "ok", 1),
            ("authorize".to_owned(), "action", "transient", 1),
            ("authorize".to_owned(), "action", "transient", 2),
            ("authorize".to_owned(), "action", "transient", 3),
            ("authorize".to_owned(), "compensation", "ok", 1),
            ("reserve".to_owned(), "compensation", "ok", 1),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_compensation_leaves_the_run_stuck() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    let saga = Saga::new("order")
        .compensated_step("reserve", ok(&journal), fails(&journal))
        .step("authorize", fails(&journal));
    let id = start(&pool, "order").await?;
    let worker = Worker::new(pool.clone(), saga, config(Duration::from_secs(30)));
    run_until_final(&pool, &worker, id).await?;
    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(run.status, RunStatus::Stuck);
    assert_eq!(run.last_error.as_deref(), Some("reserve: card declined"));
    // Stuck runs are not picked up again.
    assert_eq!(worker.run_once().await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_run_resumes_from_its_last_recorded_step_after_its_worker_dies() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    let hang_first = Arc::new(Mutex::new(true));
    // `authorize` never finishes on its first attempt: the worker dies while it is in flight.
    let authorize = {
        let journal = journal.clone();
        let hang_first = hang_first.clone();
        move |input: StepInput<Order>| {
            journal.push(&input.idempotency_key);
            let hang = std::mem::replace(&mut *hang_first.lock().unwrap(), false);
            let mut data = input.data;
            data.touched += 1;
            async move {
                if hang {
                    futures::future::pending::<()>().await;
                }
                Ok(data)
            }
            .boxed()
        }
    };
    let saga = |journal: &Journal, authorize| {
        Saga::new("order")
            .compensated_step("reserve", ok(journal), ok(journal))
            .compensated_step("authorize", authorize, ok(journal))
            .step("confirm", ok(journal))
    };
    let id = start(&pool, "order").await?;

    let lease = Duration::from_secs(1);
    let first = Worker::new(
        pool.clone(),
        saga(&journal, authorize.clone()),
        config(lease),
    );
    let stop = CancellationToken::new();
    let dying = tokio::spawn({
        let stop = stop.clone();
        async move { first.run(stop).await }
    });
    wait_until(WAIT, || async { journal.steps().len() == 2 }).await?;
    dying.abort(); // the worker dies with `authorize` in flight
    let _ = dying.await;
    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(
        (run.status, run.step),
        (RunStatus::Running, 1),
        "reserve recorded"
    );

    // Another worker takes the run over once the lease has run out, and resumes at `authorize`.
    let second = Worker::new(pool.clone(), saga(&journal, authorize), config(lease));
    assert_eq!(
        second.run_once().await?,
        0,
        "still leased to the dead worker"
    );
    run_until_final(&pool, &second, id).await?;
    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(
        journal.steps(),
        ["reserve", "authorize", "authorize", "confirm"]
    );
    assert_eq!(run.data, serde_json::json!({ "touched": 3 }));
    // The repeated attempt carried the same idempotency key.
    let counts = journal.counts();
    assert_eq!(counts[&format!("{id}:authorize")], 2);
    assert_eq!(counts[&format!("{id}:reserve")], 1);
    stop.cancel();
    Ok(())
}

#[tokio::test]
async fn workers_share_runs_without_running_one_twice() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    // Steps that take a little while, so workers overlap.
    let slow = |journal: &Journal| {
        let journal = journal.clone();
        move |input: StepInput<Order>| {
            journal.push(&input.idempotency_key);
            let mut data = input.data;
            data.touched += 1;
            async move {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..5))).await;
                Ok(data)
            }
            .boxed()
        }
    };
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(start(&pool, "order").await?);
    }
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..3 {
        let saga = Saga::new("order")
            .compensated_step("reserve", slow(&journal), ok(&journal))
            .compensated_step("authorize", slow(&journal), ok(&journal))
            .step("confirm", slow(&journal));
        let worker = Worker::new(
            pool.clone(),
            saga,
            WorkerConfig {
                batch: 4,
                ..config(Duration::from_secs(30))
            },
        );
        let stop = stop.clone();
        workers.push(tokio::spawn(async move { worker.run(stop).await }));
    }
    wait_until(WAIT, || async {
        let mut done = 0;
        for id in &ids {
            done += usize::from(status(&pool, *id).await == RunStatus::Completed);
        }
        done == ids.len()
    })
    .await?;
    stop.cancel();
    for worker in workers {
        worker.await??;
    }
    let counts = journal.counts();
    assert_eq!(counts.len(), ids.len() * 3);
    assert!(
        counts.values().all(|&n| n == 1),
        "a step ran twice: {counts:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_step_that_panics_is_an_unknown_outcome_retried_then_compensated() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    let panics = {
        let journal = journal.clone();
        move |input: StepInput<Order>| {
            journal.push(&input.idempotency_key);
            // The first attempt panics in the closure, the later ones in the future.
            assert!(input.attempt > 1, "processor client bug");
            async { panic!("processor client bug") }.boxed()
        }
    };
    let saga = Saga::new("order")
        .compensated_step("reserve", ok(&journal), ok(&journal))
        .compensated_step("authorize", panics, ok(&journal))
        .retry(fast_retries());
    let id = start(&pool, "order").await?;
    let worker = Worker::new(pool.clone(), saga, config(Duration::from_secs(30)));
    run_until_final(&pool, &worker, id).await?;
    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(run.status, RunStatus::Compensated);
    assert!(
        run.failure.as_deref().unwrap().contains("step panicked"),
        "{:?}",
        run.failure
    );
    assert_eq!(
        journal.steps(),
        [
            "reserve",
            "authorize",
            "authorize",
            "authorize",
            "authorize:compensate",
            "reserve:compensate"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_compensation_only_first_step_ends_every_compensated_run_with_the_reason() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let cancel = |journal: &Journal| {
        let (journal, reasons) = (journal.clone(), reasons.clone());
        move |input: StepInput<Order>| {
            journal.push(&input.idempotency_key);
            reasons.lock().unwrap().push(input.failure.clone());
            async move { Ok(input.data) }.boxed()
        }
    };
    let saga = |journal: &Journal, reserve_fails: bool| {
        let reserve: Box<dyn Fn(StepInput<Order>) -> _ + Send + Sync> = if reserve_fails {
            Box::new(fails(journal))
        } else {
            Box::new(ok(journal))
        };
        Saga::new("order")
            .compensation("cancel", cancel(journal))
            .compensated_step("reserve", move |i| reserve(i), ok(journal))
            .step("authorize", fails(journal))
    };

    // Fails at authorize: reserve is undone, then the order cancelled with the reason.
    let id = start(&pool, "order").await?;
    let worker = Worker::new(
        pool.clone(),
        saga(&journal, false),
        config(Duration::from_secs(30)),
    );
    run_until_final(&pool, &worker, id).await?;
    assert_eq!(status(&pool, id).await, RunStatus::Compensated);
    assert_eq!(
        journal.steps(),
        [
            "reserve",
            "authorize",
            "reserve:compensate",
            "cancel:compensate"
        ]
    );
    assert_eq!(
        history(&pool, id)
            .await
            .first()
            .map(|h| h.0.clone())
            .as_deref(),
        Some("reserve"),
        "going forward, the compensation-only step is neither run nor recorded"
    );

    // Fails at the first real step: nothing to undo but the cancel.
    let journal = Journal::default();
    let id = start(&pool, "order").await?;
    let worker = Worker::new(
        pool.clone(),
        saga(&journal, true),
        config(Duration::from_secs(30)),
    );
    run_until_final(&pool, &worker, id).await?;
    assert_eq!(status(&pool, id).await, RunStatus::Compensated);
    assert_eq!(journal.steps(), ["reserve", "cancel:compensate"]);
    assert_eq!(
        *reasons.lock().unwrap(),
        [
            Some("authorize: failed: card declined".to_owned()),
            Some("reserve: failed: card declined".to_owned())
        ]
    );
    Ok(())
}
