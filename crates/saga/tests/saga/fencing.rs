//! Fencing: a worker that stalled past its lease while another worker took the run over
//! records nothing, and its step cannot commit a fenced write.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::FutureExt as _;
use shop_saga::{Outcome, Phase, RunStatus, Saga, SagaError, StepError, StepInput, Worker};
use shop_testkit::wait_until;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// Whether a step's `Fence::hold` succeeded, by the epoch it held.
type Holds = Arc<Mutex<Vec<(i64, bool)>>>;

/// A pause of the whole worker: the step's synchronous part blocks the worker's only thread
/// (like SIGSTOP: no heartbeat, no timer runs) until the test resumes it.
type Stall = Arc<Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>>;

/// reserve → authorize (writes its effect to the saga's database, fenced) → confirm.
fn saga(journal: &Journal, pool: PgPool, holds: Holds, stall: Stall) -> Saga<Order> {
    let authorize = {
        let journal = journal.clone();
        move |input: StepInput<Order>| {
            journal.push(&input.idempotency_key);
            if let Some((stalled, resume)) = stall.lock().unwrap().take() {
                stalled.send(()).unwrap();
                resume.recv_timeout(WAIT).unwrap();
            }
            let pool = pool.clone();
            let holds = holds.clone();
            async move {
                let mut tx = pool.begin().await?;
                let held = input.fence.hold(&mut tx).await;
                holds
                    .lock()
                    .unwrap()
                    .push((input.fence.epoch(), held.is_ok()));
                if held.is_ok() {
                    sqlx::query("INSERT INTO effects (run_id, step, epoch) VALUES ($1, $2, $3)")
                        .bind(input.saga_id)
                        .bind("authorize")
                        .bind(input.fence.epoch())
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                } else {
                    assert!(matches!(held, Err(SagaError::LeaseLost)));
                }
                // Reports success either way (as a step whose remote call went through would):
                // the worker's own progress write must refuse it.
                let mut data = input.data;
                data.touched += 1;
                Ok::<_, StepError>(data)
            }
            .boxed()
        }
    };
    Saga::new("order")
        .compensated_step("reserve", ok(journal), ok(journal))
        .compensated_step("authorize", authorize, ok(journal))
        .step("confirm", ok(journal))
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_records_nothing_and_its_fence_is_refused() -> Result<()> {
    stalled_worker(Drive::RunOnce).await
}

#[tokio::test]
async fn the_same_under_run_with_coalesced_writes() -> Result<()> {
    stalled_worker(Drive::Run).await
}

/// How worker A is driven: `run_once` writes directly, `run` through its writer.
#[derive(Clone, Copy)]
enum Drive {
    RunOnce,
    Run,
}

async fn stalled_worker(drive: Drive) -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    sqlx::query("CREATE TABLE effects (run_id uuid NOT NULL, step text NOT NULL, epoch bigint)")
        .execute(&pool)
        .await?;
    let journal = Journal::default();
    let holds = Holds::default();
    let (stalled_tx, stalled_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel();
    let stall: Stall = Arc::new(Mutex::new(Some((stalled_tx, resume_rx))));
    let id = start(&pool, "order").await?;
    let lease = Duration::from_secs(2);
    let stop_a = CancellationToken::new();

    // Worker A on its own thread and runtime, so that stalling it stalls all of it.
    let a = std::thread::spawn({
        let (url, journal, holds) = (db.url.clone(), journal.clone(), holds.clone());
        let stop_a = stop_a.clone();
        move || -> Result<(String, usize)> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let pool = PgPool::connect(&url).await?;
                let worker = Worker::new(
                    pool.clone(),
                    saga(&journal, pool, holds, stall),
                    config(lease),
                );
                let claimed = match drive {
                    Drive::RunOnce => worker.run_once().await?,
                    Drive::Run => {
                        worker.run(stop_a).await?;
                        1
                    }
                };
                Ok((worker.owner().to_owned(), claimed))
            })
        }
    });
    tokio::task::spawn_blocking(move || stalled_rx.recv_timeout(WAIT))
        .await?
        .context("worker A reached authorize")?;
    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(
        (run.status, run.step, run.lease_epoch),
        (RunStatus::Running, 1, 1)
    );

    // Worker B takes over once A's lease has run out, and finishes the run.
    let b = Worker::new(
        pool.clone(),
        saga(&journal, pool.clone(), holds.clone(), Stall::default()),
        config(lease),
    );
    run_until_final(&pool, &b, id).await?;
    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!((run.status, run.lease_epoch), (RunStatus::Completed, 2));

    // A wakes up with its step in hand: its fence and its progress write are refused.
    resume_tx.send(())?;
    wait_until(WAIT, || async {
        shop_saga::store::timeline(&pool, id)
            .await
            .unwrap()
            .iter()
            .any(|r| r.outcome == Outcome::LeaseLost)
    })
    .await?;
    stop_a.cancel();
    let (a_owner, claimed) = tokio::task::spawn_blocking(move || a.join())
        .await?
        .map_err(|_| anyhow::anyhow!("worker A panicked"))??;
    assert_eq!(claimed, 1);
    assert_ne!(a_owner, b.owner());

    let mut holds = holds.lock().unwrap().clone();
    holds.sort_unstable();
    assert_eq!(holds, [(1, false), (2, true)], "A's hold refused, B's held");
    let effects: Vec<(String, i64)> = sqlx::query("SELECT step, epoch FROM effects")
        .fetch_all(&pool)
        .await?
        .iter()
        .map(|row| (row.get("step"), row.get("epoch")))
        .collect();
    assert_eq!(
        effects,
        [("authorize".to_owned(), 2)],
        "the effect is recorded once, by B"
    );

    let after = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(after, run, "A changed nothing on the run");
    assert_eq!(after.data, serde_json::json!({ "touched": 3 }));
    let timeline = shop_saga::store::timeline(&pool, id).await?;
    let rows: Vec<(&str, Outcome, i64)> = timeline
        .iter()
        .map(|r| (r.step.as_str(), r.outcome, r.epoch))
        .collect();
    assert_eq!(
        rows,
        [
            ("reserve", Outcome::Ok, 1),
            ("authorize", Outcome::Ok, 2),
            ("confirm", Outcome::Ok, 2),
            ("authorize", Outcome::LeaseLost, 1),
        ]
    );
    assert!(timeline.iter().all(|r| r.phase == Phase::Action));
    assert!(
        timeline[3]
            .error
            .as_deref()
            .unwrap()
            .contains("ended ok but was not recorded"),
        "{:?}",
        timeline[3].error
    );
    let counts = journal.counts();
    assert_eq!(counts[&format!("{id}:authorize")], 2, "A and B both ran it");
    assert_eq!(counts[&format!("{id}:reserve")], 1);
    assert_eq!(counts[&format!("{id}:confirm")], 1);
    Ok(())
}
