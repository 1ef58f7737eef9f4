//! Many concurrent reservations over one channel: no oversell, no deadlock.

use std::sync::Arc;

use shop_proto::inventory::{CommitRequest, ReleaseRequest};
use tokio::sync::Barrier;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{
    assert_conserved, reserve_request, spawn_app_with, unthrottled, violated_fields,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_reservations_of_fifty_units_reserve_exactly_fifty() {
    let mut app = spawn_app_with(unthrottled).await;
    let product = Uuid::new_v4();
    app.stock(product, 50).await;
    let start = Arc::new(Barrier::new(200));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let mut client = app.client.clone();
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                client
                    .reserve(reserve_request(
                        Uuid::new_v4(),
                        Uuid::new_v4(),
                        &[(product, 1)],
                    ))
                    .await
            })
        })
        .collect();
    let (mut reserved, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => reserved += 1,
            Err(err) => {
                assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
                assert!(err.message().contains(&product.to_string()), "{err:?}");
                assert_eq!(violated_fields(&err), vec!["lines[0].quantity"]);
                refused += 1;
            }
        }
    }
    assert_eq!((reserved, refused), (50, 150));
    let stock = app.get_stock(product).await;
    assert_eq!(
        (
            stock.on_hand,
            stock.available,
            stock.reserved,
            stock.committed
        ),
        (50, 0, 50, 0)
    );
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_line_reservations_in_opposite_orders_neither_deadlock_nor_oversell() {
    let mut app = spawn_app_with(unthrottled).await;
    let products: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for product in &products {
        app.stock(*product, 40).await;
    }
    let start = Arc::new(Barrier::new(90));
    let tasks: Vec<_> = (0..90_usize)
        .map(|i| {
            let mut client = app.client.clone();
            let start = Arc::clone(&start);
            // Every rotation and direction of the three products, so every pair of tasks
            // names shared rows in opposite orders at some point.
            let mut lines: Vec<(Uuid, i32)> = products.iter().map(|p| (*p, 1)).collect();
            lines.rotate_left(i % 3);
            if i % 2 == 1 {
                lines.reverse();
            }
            lines.truncate(2 + i % 2);
            tokio::spawn(async move {
                start.wait().await;
                let id = Uuid::new_v4();
                let reserved = client
                    .reserve(reserve_request(id, Uuid::new_v4(), &lines))
                    .await;
                // Releases and commits interleave with the reservations, locking the same rows.
                if reserved.is_ok() {
                    let reservation_id = id.to_string();
                    match i % 3 {
                        0 => {
                            client
                                .release(ReleaseRequest {
                                    reservation_id,
                                    reason: "test".into(),
                                })
                                .await
                                .map(|_| ())
                                .map_err(|e| ("release", e))?;
                        }
                        1 => {
                            client
                                .commit(CommitRequest { reservation_id })
                                .await
                                .map(|_| ())
                                .map_err(|e| ("commit", e))?;
                        }
                        _ => {}
                    }
                }
                reserved.map(|_| ()).map_err(|e| ("reserve", e))
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => succeeded += 1,
            // A deadlock would surface as INTERNAL (PostgreSQL aborts a victim), a lock wait
            // past the deadline as DEADLINE_EXCEEDED; only a shortage is acceptable.
            Err((call, err)) => assert_eq!(
                (call, err.code()),
                ("reserve", Code::FailedPrecondition),
                "{err:?}"
            ),
        }
    }
    assert!(succeeded > 0);
    for product in &products {
        let stock = app.get_stock(*product).await;
        assert_eq!(stock.on_hand, 40);
        assert!(stock.reserved + stock.committed <= 40, "{stock:?}");
    }
    assert_conserved(&app.db).await;
    app.shutdown().await;
}
