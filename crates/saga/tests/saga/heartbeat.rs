//! Heartbeats and step timeouts: a long step keeps its lease, a step whose lease was taken is
//! dropped, a step that exceeds its timeout is in doubt (compensated once attempts run out), and
//! a timeout not shorter than the lease is refused or clamped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::FutureExt as _;
use shop_saga::{
    Outcome, RetryPolicy, RunStatus, Saga, SagaError, StepInput, Worker, WorkerConfig,
};
use shop_testkit::wait_until;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::common::*;

async fn lease_until(pool: &PgPool, id: Uuid) -> OffsetDateTime {
    sqlx::query_scalar("SELECT lease_until FROM saga_runs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_long_step_renews_its_lease_while_it_runs() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let slow = {
        let (pool, seen) = (pool.clone(), seen.clone());
        move |input: StepInput<Order>| {
            let (pool, seen) = (pool.clone(), seen.clone());
            async move {
                let at_start = lease_until(&pool, input.saga_id).await;
                // Longer than a third of the lease: the heartbeat renews it meanwhile.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let at_end = lease_until(&pool, input.saga_id).await;
                seen.lock().unwrap().push((at_start, at_end));
                Ok(input.data)
            }
            .boxed()
        }
    };
    let saga = Saga::new("slow").step("authorize", slow);
    let id = start(&pool, "slow").await?;
    // The heartbeat comes at 1 s, the step ends at 1.5 s, the timeout would be at 2.5 s.
    let lease = Duration::from_secs(3);
    let worker = Worker::try_new(
        pool.clone(),
        saga,
        WorkerConfig {
            step_timeout: Duration::from_millis(2500),
            ..config(lease)
        },
    )?;
    assert_eq!(worker.run_once().await?, 1);
    assert_eq!(status(&pool, id).await, RunStatus::Completed);
    let seen = seen.lock().unwrap().clone();
    let [(at_start, at_end)] = seen[..] else {
        panic!("one attempt expected, saw {seen:?}")
    };
    assert!(
        at_end > at_start,
        "the lease was renewed during the step: {at_start} → {at_end}"
    );
    Ok(())
}

#[tokio::test]
async fn a_step_holding_its_fence_past_a_heartbeat_is_not_deadlocked_by_it() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    // The step locks the run's row (Fence::hold) and keeps its transaction open past the first
    // heartbeat, whose UPDATE then waits for that lock: the step must still be driven meanwhile.
    let confirm = {
        let pool = pool.clone();
        move |input: StepInput<Order>| {
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await?;
                input.fence.hold(&mut tx).await?;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                sqlx::query("SELECT 1").execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(input.data)
            }
            .boxed()
        }
    };
    let saga = Saga::new("fenced").step("confirm", confirm);
    let id = start(&pool, "fenced").await?;
    let worker = Worker::try_new(
        pool.clone(),
        saga,
        // The heartbeat comes at 1 s, while the step holds the row until 1.5 s.
        WorkerConfig {
            step_timeout: Duration::from_millis(2500),
            ..config(Duration::from_secs(3))
        },
    )?;
    let driven = tokio::time::timeout(WAIT, worker.run_once()).await;
    assert!(driven.is_ok(), "the worker hung on its own heartbeat");
    assert_eq!(driven??, 1);
    assert_eq!(status(&pool, id).await, RunStatus::Completed);
    assert_eq!(
        history(&pool, id).await,
        [("confirm".to_owned(), "action", "ok", 1)]
    );
    Ok(())
}

#[tokio::test]
async fn a_heartbeat_that_finds_the_lease_lost_drops_the_step_and_records_nothing() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let started = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let hang = {
        let (started, dropped) = (started.clone(), dropped.clone());
        move |_: StepInput<Order>| {
            started.store(true, Ordering::SeqCst);
            let guard = SetOnDrop(dropped.clone());
            async move {
                let _guard = guard;
                futures::future::pending().await
            }
            .boxed()
        }
    };
    let saga = Saga::new("hang").step("authorize", hang);
    let id = start(&pool, "hang").await?;
    // The heartbeat comes at 1 s, the timeout would at 2.5 s.
    let lease = Duration::from_secs(3);
    let worker = Worker::try_new(
        pool.clone(),
        saga,
        WorkerConfig {
            step_timeout: Duration::from_millis(2500),
            ..config(lease)
        },
    )?;
    let driving = tokio::spawn(async move { worker.run_once().await });
    wait_until(WAIT, || async { started.load(Ordering::SeqCst) }).await?;
    // Another claim takes the run (as one would after the lease ran out).
    sqlx::query(
        "UPDATE saga_runs SET lease_epoch = lease_epoch + 1, lease_owner = 'another-worker' \
         WHERE id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await?;
    assert_eq!(driving.await??, 1);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the step's future was dropped"
    );

    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(
        (run.status, run.step, run.attempts, run.lease_epoch),
        (RunStatus::Running, 0, 0, 2)
    );
    assert_eq!(run.lease_owner.as_deref(), Some("another-worker"));
    let timeline = shop_saga::store::timeline(&pool, id).await?;
    assert_eq!(timeline.len(), 1);
    assert_eq!(
        (timeline[0].outcome, timeline[0].epoch),
        (Outcome::LeaseLost, 1)
    );
    assert!(
        timeline[0]
            .error
            .as_deref()
            .unwrap()
            .contains("while the attempt ran"),
        "dropped by the heartbeat, not by the timeout: {:?}",
        timeline[0].error
    );
    Ok(())
}

#[tokio::test]
async fn a_step_that_exceeds_its_timeout_is_in_doubt_and_compensated() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    let saga = Saga::new("order")
        .compensated_step("reserve", ok(&journal), ok(&journal))
        .compensated_step("authorize", hangs(&journal), ok(&journal))
        .step("confirm", ok(&journal))
        .retry(RetryPolicy {
            max_attempts: 2,
            ..fast_retries()
        });
    let id = start(&pool, "order").await?;
    let worker = Worker::try_new(
        pool.clone(),
        saga,
        WorkerConfig {
            step_timeout: Duration::from_millis(100),
            ..config(Duration::from_secs(5))
        },
    )?;
    run_until_final(&pool, &worker, id).await?;
    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(run.status, RunStatus::Compensated);
    assert_eq!(
        run.failure.as_deref(),
        Some("authorize: timeout: timed out after 100ms")
    );
    assert_eq!(
        history(&pool, id).await,
        [
            ("reserve".to_owned(), "action", "ok", 1),
            ("authorize".to_owned(), "action", "timeout", 1),
            ("authorize".to_owned(), "action", "timeout", 2),
            ("authorize".to_owned(), "compensation", "ok", 1),
            ("reserve".to_owned(), "compensation", "ok", 1),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_step_timeout_not_shorter_than_the_lease_is_refused_or_clamped() -> Result<()> {
    let pool = PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none")?;
    let lease = Duration::from_secs(10);
    let bad = WorkerConfig {
        lease,
        step_timeout: lease,
        ..WorkerConfig::default()
    };
    let refused = Worker::try_new(pool.clone(), Saga::<Order>::new("order"), bad.clone());
    assert!(
        matches!(refused, Err(SagaError::InvalidConfig(ref why)) if why.contains("step_timeout"))
    );
    let clamped = Worker::new(pool.clone(), Saga::<Order>::new("order"), bad);
    assert_eq!(clamped.step_timeout(), lease / 2);
    let fine = Worker::try_new(pool, Saga::<Order>::new("order"), config(lease))?;
    assert_eq!(fine.step_timeout(), lease / 2);
    Ok(())
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
