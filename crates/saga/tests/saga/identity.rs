//! Two workers built from one config have distinct identities, in memory and in `lease_owner`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::FutureExt as _;
use shop_saga::{Saga, StepInput, Worker, WorkerConfig};

use crate::common::*;

#[tokio::test]
async fn two_workers_from_one_config_have_distinct_identities() -> Result<()> {
    let db = database().await?;
    let pool = db.pool.clone();
    let owners = Arc::new(Mutex::new(BTreeSet::new()));
    // The step reads which worker holds its run.
    let saga = || {
        let (pool, owners) = (pool.clone(), owners.clone());
        Saga::new("order").step("reserve", move |input: StepInput<Order>| {
            let (pool, owners) = (pool.clone(), owners.clone());
            async move {
                let owner: String =
                    sqlx::query_scalar("SELECT lease_owner FROM saga_runs WHERE id = $1")
                        .bind(input.saga_id)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                owners.lock().unwrap().insert(owner);
                Ok(input.data)
            }
            .boxed()
        })
    };
    let config = WorkerConfig {
        owner: "orders".to_owned(),
        batch: 1,
        ..config(Duration::from_secs(30))
    };
    let a = Worker::new(pool.clone(), saga(), config.clone());
    let b = Worker::new(pool.clone(), saga(), config);
    assert_ne!(a.owner(), b.owner());
    assert!(a.owner().starts_with("orders-") && b.owner().starts_with("orders-"));

    start(&pool, "order").await?;
    start(&pool, "order").await?;
    assert_eq!(a.run_once().await?, 1);
    assert_eq!(b.run_once().await?, 1);
    let owners = owners.lock().unwrap().clone();
    let expected: BTreeSet<String> = [a.owner().to_owned(), b.owner().to_owned()].into();
    assert_eq!(owners, expected);
    Ok(())
}
