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

/// Not a check (run by hand): how many 5-step runs with no-op steps one worker completes per
/// second on this machine, and the commits they cost.
/// `cargo nextest run -p shop-saga --run-ignored only --no-capture runs_per_second`
/// (`SAGA_RUNS`, `SAGA_BATCH`, `SAGA_WORKERS` to vary it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn runs_per_second() -> Result<()> {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (runs, batch, workers) = (
        env("SAGA_RUNS", 5000),
        env("SAGA_BATCH", 64),
        env("SAGA_WORKERS", 1),
    );
    let db = database().await?;
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&db.pool)
        .await?;
    let monitor = PgPool::connect(&format!("{}/postgres", db.pg.url())).await?;
    let mut tx = db.pool.begin().await?;
    for _ in 0..runs {
        shop_saga::start(&mut tx, "order", uuid::Uuid::new_v4(), &Order::default()).await?;
    }
    tx.commit().await?;
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(batch.min(32))?)
        .connect(&db.url)
        .await?;
    let journal = Journal::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let before = commits(&monitor, &name).await;
    let cpu_before = (cpu_ticks(&[std::process::id()]), postgres_ticks());
    let began = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let saga = Saga::new("order")
            .compensated_step("reserve", ok(&journal), ok(&journal))
            .compensated_step("authorize", ok(&journal), ok(&journal))
            .compensated_step("capture", ok(&journal), ok(&journal))
            .compensated_step("commit", ok(&journal), ok(&journal))
            .step("confirm", ok(&journal));
        let worker = Worker::try_new(
            pool.clone(),
            saga,
            WorkerConfig {
                batch: i64::try_from(batch)?,
                ..config(Duration::from_secs(30))
            },
        )?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move { worker.run(stop).await }));
    }
    wait_for(Duration::from_secs(600), || async {
        let counts = shop_saga::store::counts(&db.pool, "order").await.ok()?;
        (counts["completed"] == i64::try_from(runs).ok()?).then_some(())
    })
    .await?;
    let took = began.elapsed();
    let (engine, postgres) = (
        cpu_ticks(&[std::process::id()]) - cpu_before.0,
        postgres_ticks() - cpu_before.1,
    );
    stop.cancel();
    for task in tasks {
        task.await??;
    }
    pool.close().await;
    db.pool.close().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = commits(&monitor, &name).await - before;
    println!(
        "{runs} runs × 5 steps, {workers} worker(s), batch {batch}: {took:?}, {:.0} runs/s, \
         {:.0} steps/s; ~{spent} commits ({:.2} per run, incl. polling); CPU: test process \
         (engine, debug build) {:.2} s, PostgreSQL {:.2} s (live processes)",
        runs as f64 / took.as_secs_f64(),
        (runs * 5) as f64 / took.as_secs_f64(),
        spent as f64 / runs as f64,
        engine as f64 / 100.0,
        postgres as f64 / 100.0,
    );
    Ok(())
}

/// User + system CPU of processes `pids`, in clock ticks (1/100 s), from `/proc`.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// The CPU of this test's PostgreSQL: the postmaster (a child of this process) and its children.
fn postgres_ticks() -> u64 {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    let me = std::process::id();
    let postmasters: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| parent_of(p) == Some(me))
        .collect();
    let mut family = postmasters.clone();
    family.extend(
        pids.iter()
            .copied()
            .filter(|&p| parent_of(p).is_some_and(|parent| postmasters.contains(&parent))),
    );
    cpu_ticks(&family)
}
