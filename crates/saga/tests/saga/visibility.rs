//! The operator's view: runs per status, stuck runs, a run's step history, and the metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use futures::FutureExt as _;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use shop_saga::store::{self, StuckRun};
use shop_saga::{Outcome, Phase, Saga, SagaMetrics, StepError, StepInput, Worker, WorkerConfig};
use shop_testkit::wait_until;
use tokio_util::sync::CancellationToken;

use crate::common::*;

#[tokio::test]
async fn counts_stuck_runs_timelines_and_metrics_show_what_happened() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let journal = Journal::default();
    // authorize: transient once, then fine; fails for good on runs marked "decline".
    let declined = Arc::new(std::sync::Mutex::new(Vec::new()));
    let flaky_once = Arc::new(AtomicBool::new(true));
    let authorize = {
        let (declined, flaky_once) = (declined.clone(), flaky_once.clone());
        move |input: StepInput<Order>| {
            let decline = declined.lock().unwrap().contains(&input.saga_id);
            let flaky = !decline && flaky_once.swap(false, Ordering::SeqCst);
            async move {
                if decline {
                    Err(StepError::Failed("card declined".into()))
                } else if flaky {
                    Err(StepError::Transient("payments unavailable".into()))
                } else {
                    Ok(input.data)
                }
            }
            .boxed()
        }
    };
    // release fails for good on the run marked "stuck".
    let stuck_ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let release = {
        let stuck_ids = stuck_ids.clone();
        move |input: StepInput<Order>| {
            let stuck = stuck_ids.lock().unwrap().contains(&input.saga_id);
            async move {
                if stuck {
                    Err(StepError::Failed("reservation unknown".into()))
                } else {
                    Ok(input.data)
                }
            }
            .boxed()
        }
    };
    let saga = Saga::new("visible")
        .compensated_step("reserve", ok(&journal), release)
        .step("authorize", authorize)
        .step("confirm", ok(&journal))
        .retry(fast_retries());

    let confirmed = start(&pool, "visible").await?;
    let compensated = start(&pool, "visible").await?;
    let stuck = start(&pool, "visible").await?;
    declined.lock().unwrap().extend([compensated, stuck]);
    stuck_ids.lock().unwrap().push(stuck);

    let metrics = SagaMetrics::default();
    let mut registry = Registry::with_prefix("shop");
    metrics.register(&mut registry);
    let worker = Worker::new(
        pool.clone(),
        saga,
        WorkerConfig {
            gauge_refresh: Duration::from_millis(20),
            ..config(Duration::from_secs(30))
        },
    )
    .with_metrics(metrics.clone());
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(stop).await }
    });
    wait_until(WAIT, || async {
        metrics.runs("visible", "completed") == 1
            && metrics.runs("visible", "compensated") == 1
            && metrics.runs("visible", "stuck") == 1
    })
    .await?;
    stop.cancel();
    running.await??;

    let counts = store::counts(&pool, "visible").await?;
    let expected: std::collections::BTreeMap<String, i64> = [
        ("running", 0),
        ("compensating", 0),
        ("completed", 1),
        ("compensated", 1),
        ("stuck", 1),
    ]
    .into_iter()
    .map(|(s, n)| (s.to_owned(), n))
    .collect();
    assert_eq!(counts, expected);
    assert_eq!(
        store::stuck(&pool, "visible", 10).await?,
        [StuckRun {
            id: stuck,
            error: "reserve: reservation unknown".to_owned()
        }]
    );

    let timeline = store::timeline(&pool, confirmed).await?;
    let rows: Vec<(&str, Phase, Outcome, i32, i64)> = timeline
        .iter()
        .map(|r| (r.step.as_str(), r.phase, r.outcome, r.attempt, r.epoch))
        .collect();
    assert_eq!(
        rows,
        [
            ("reserve", Phase::Action, Outcome::Ok, 1, 1),
            ("authorize", Phase::Action, Outcome::Transient, 1, 1),
            // A short retry wait (10-20 ms, under the poll) is waited holding the run.
            ("authorize", Phase::Action, Outcome::Ok, 2, 1),
            ("confirm", Phase::Action, Outcome::Ok, 1, 1),
        ]
    );
    assert_eq!(timeline[1].error.as_deref(), Some("payments unavailable"));
    assert!(timeline.iter().all(|r| r.started_at <= r.finished_at));
    assert_eq!(
        history(&pool, compensated).await,
        [
            ("reserve".to_owned(), "action", "ok", 1),
            ("authorize".to_owned(), "action", "failed", 1),
            ("reserve".to_owned(), "compensation", "ok", 1),
        ]
    );
    assert_eq!(
        history(&pool, stuck).await,
        [
            ("reserve".to_owned(), "action", "ok", 1),
            ("authorize".to_owned(), "action", "failed", 1),
            ("reserve".to_owned(), "compensation", "failed", 1),
        ]
    );

    assert_eq!(
        metrics.steps("visible", "reserve", Phase::Action, Outcome::Ok),
        3
    );
    assert_eq!(
        metrics.steps("visible", "authorize", Phase::Action, Outcome::Failed),
        2
    );
    let mut text = String::new();
    encode(&mut text, &registry)?;
    for line in [
        r#"shop_saga_runs{kind="visible",status="stuck"} 1"#,
        r#"shop_saga_runs{kind="visible",status="running"} 0"#,
        r#"shop_saga_steps_total{kind="visible",step="authorize",phase="action",outcome="transient"} 1"#,
        r#"shop_saga_steps_total{kind="visible",step="reserve",phase="compensation",outcome="failed"} 1"#,
        r#"shop_saga_step_duration_seconds_count{kind="visible",step="reserve"} 5"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
    Ok(())
}
