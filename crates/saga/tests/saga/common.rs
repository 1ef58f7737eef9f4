//! Helpers shared by the saga tests: a database, a journal of what steps did, steps that
//! succeed or fail, run helpers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::FutureExt as _;
use serde::{Deserialize, Serialize};
use shop_saga::{RetryPolicy, RunStatus, StepError, StepFuture, StepInput, Worker, WorkerConfig};
use shop_testkit::{Postgres, wait_until};
use sqlx::PgPool;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(30);

/// The data the test sagas carry: how many steps have added to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub touched: u32,
}

/// What the steps did, by idempotency key, in order.
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    pub fn push(&self, key: &str) {
        self.0.lock().unwrap().push(key.to_owned());
    }

    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The journal with every run id cut off (`<id>:reserve` → `reserve`).
    pub fn steps(&self) -> Vec<String> {
        self.entries()
            .iter()
            .map(|k| k.split_once(':').map_or(k.clone(), |(_, s)| s.to_owned()))
            .collect()
    }

    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for key in self.entries() {
            *counts.entry(key).or_default() += 1;
        }
        counts
    }
}

/// A step that journals its key and bumps the data.
pub fn ok(
    journal: &Journal,
) -> impl Fn(StepInput<Order>) -> StepFuture<Order> + Send + Sync + 'static {
    let journal = journal.clone();
    move |input: StepInput<Order>| {
        journal.push(&input.idempotency_key);
        let mut data = input.data;
        data.touched += 1;
        async move { Ok(data) }.boxed()
    }
}

/// A step that journals its key and fails for good.
pub fn fails(
    journal: &Journal,
) -> impl Fn(StepInput<Order>) -> StepFuture<Order> + Send + Sync + 'static {
    let journal = journal.clone();
    move |input: StepInput<Order>| {
        journal.push(&input.idempotency_key);
        async { Err(StepError::Failed("card declined".into())) }.boxed()
    }
}

/// A step that journals its key and never finishes (until dropped).
pub fn hangs(
    journal: &Journal,
) -> impl Fn(StepInput<Order>) -> StepFuture<Order> + Send + Sync + 'static {
    let journal = journal.clone();
    move |input: StepInput<Order>| {
        journal.push(&input.idempotency_key);
        futures::future::pending().boxed()
    }
}

pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    }
}

/// A worker config with a fast poll, `lease`, and a step timeout of half of it.
pub fn config(lease: Duration) -> WorkerConfig {
    WorkerConfig {
        lease,
        step_timeout: lease / 2,
        poll: Duration::from_millis(50),
        ..WorkerConfig::default()
    }
}

/// A PostgreSQL server and a fresh, migrated database on it.
pub struct Db {
    pub pg: Postgres,
    pub pool: PgPool,
    pub url: String,
}

pub async fn database() -> Result<Db> {
    let pg = Postgres::start().await?;
    let url = pg.fresh_database().await?;
    let pool = PgPool::connect(&url).await?;
    shop_saga::migrate(&pool).await?;
    shop_saga::migrate(&pool).await?; // idempotent
    Ok(Db { pg, pool, url })
}

pub async fn start(pool: &PgPool, kind: &str) -> Result<Uuid> {
    let id = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    assert!(shop_saga::start(&mut tx, kind, id, &Order::default()).await?);
    assert!(
        !shop_saga::start(&mut tx, kind, id, &Order::default()).await?,
        "start twice is a no-op"
    );
    tx.commit().await?;
    Ok(id)
}

pub async fn status(pool: &PgPool, id: Uuid) -> RunStatus {
    shop_saga::get(pool, id).await.unwrap().unwrap().status
}

pub async fn run_until_final(pool: &PgPool, worker: &Worker<Order>, id: Uuid) -> Result<()> {
    wait_until(WAIT, || async {
        worker.run_once().await.unwrap();
        status(pool, id).await.is_final()
    })
    .await?;
    Ok(())
}

/// `(step, phase, outcome, attempt)` of every row of a run's history.
pub async fn history(pool: &PgPool, id: Uuid) -> Vec<(String, &'static str, &'static str, i32)> {
    shop_saga::store::timeline(pool, id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.step, r.phase.as_str(), r.outcome.as_str(), r.attempt))
        .collect()
}
