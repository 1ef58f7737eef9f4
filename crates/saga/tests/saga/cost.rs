//! What a run costs the database: one statement per recorded step, counted by PostgreSQL.

use std::time::Duration;

use anyhow::Result;
use shop_saga::{RunStatus, Saga, Worker, WorkerConfig};
use shop_testkit::wait_for;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::common::*;

/// Committed transactions of database `name`, as the statistics collector last heard of them.
async fn commits(monitor: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
        .bind(name)
        .fetch_one(monitor)
        .await
        .unwrap()
}

/// Has the worker's backend flush its statistics as soon as it goes idle.
async fn flush(pool: &PgPool) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_five_step_run_costs_one_statement_per_step_plus_start_and_claim() -> Result<()> {
    let db = database().await?;
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&db.pool)
        .await?;
    db.pool.close().await;
    // Counted from another database, so that watching adds nothing to the count.
    let monitor = PgPool::connect(&format!("{}/postgres", db.pg.url())).await?;
    let journal = Journal::default();
    let saga = Saga::new("order")
        .compensated_step("reserve", ok(&journal), ok(&journal))
        .compensated_step("authorize", ok(&journal), ok(&journal))
        .compensated_step("capture", ok(&journal), ok(&journal))
        .compensated_step("commit", ok(&journal), ok(&journal))
        .step("confirm", ok(&journal));
    // One connection: every statement is prepared once, on the warm-up run.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await?;
    let worker = Worker::try_new(
        pool.clone(),
        saga,
        WorkerConfig {
            batch: 1,
            ..config(Duration::from_secs(30))
        },
    )?;
    let warm_up = start(&pool, "order").await?;
    assert_eq!(worker.run_once().await?, 1);
    assert_eq!(status(&pool, warm_up).await, RunStatus::Completed);
    flush(&pool).await;
    let before = wait_for(WAIT, || {
        let monitor = &monitor;
        let name = &name;
        async move {
            let first = commits(monitor, name).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            (commits(monitor, name).await == first).then_some(first)
        }
    })
    .await?;

    // The measured run: start (with its pg_notify), one claim, five step writes, and the
    // statement that flushes the statistics; no heartbeat for short steps.
    let id = uuid::Uuid::new_v4();
    let mut conn = pool.acquire().await?;
    assert!(shop_saga::start(&mut conn, "order", id, &Order::default()).await?);
    drop(conn);
    assert_eq!(worker.run_once().await?, 1);
    flush(&pool).await;
    let expected = 1 + 1 + 5 + 1;
    let spent = wait_for(WAIT, || {
        let monitor = &monitor;
        let name = &name;
        async move {
            let spent = commits(monitor, name).await - before;
            (spent >= expected).then_some(spent)
        }
    })
    .await?;
    assert_eq!(spent, expected, "statements of a 5-step run");
    let run = shop_saga::get(&pool, id).await?.unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(shop_saga::store::timeline(&pool, id).await?.len(), 5);
    Ok(())
}
