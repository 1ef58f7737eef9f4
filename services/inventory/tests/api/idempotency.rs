//! Every idempotency rule: Reserve by reservation id, Release and Commit by state, AdjustStock
//! by key; the same id or key with a different body is refused.

use std::sync::Arc;

use shop_proto::inventory::{
    AdjustStockRequest, CommitRequest, ReleaseRequest, ReservationStatus, StockReleased,
};
use tokio::sync::Barrier;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{
    TestApp, assert_conserved, error_info, reserve_request, spawn_app, spawn_app_with, unthrottled,
    violated_fields,
};

async fn release(app: &mut TestApp, id: &str) -> Result<ReservationStatus, tonic::Status> {
    let response = app
        .client
        .release(ReleaseRequest {
            reservation_id: id.into(),
            reason: "payment declined".into(),
        })
        .await?;
    Ok(response.into_inner().reservation.unwrap().status())
}

async fn commit(app: &mut TestApp, id: &str) -> Result<ReservationStatus, tonic::Status> {
    let response = app
        .client
        .commit(CommitRequest {
            reservation_id: id.into(),
        })
        .await?;
    Ok(response.into_inner().reservation.unwrap().status())
}

#[tokio::test]
async fn a_reserve_retry_returns_the_same_reservation_and_holds_stock_once() {
    let mut app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    app.stock(a, 10).await;
    app.stock(b, 10).await;
    let (id, order) = (Uuid::new_v4(), Uuid::new_v4());
    let first = app
        .client
        .reserve(reserve_request(id, order, &[(a, 2), (b, 3)]))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    // The same lines in another order are the same request.
    let again = app
        .client
        .reserve(reserve_request(id, order, &[(b, 3), (a, 2)]))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(app.get_stock(a).await.reserved, 2);
    assert_eq!(app.get_stock(b).await.reserved, 3);
    // After a release, a late retry answers with the released reservation, reserving nothing.
    release(&mut app, &id.to_string()).await.unwrap();
    let late = app
        .client
        .reserve(reserve_request(id, order, &[(a, 2), (b, 3)]))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(late.status(), ReservationStatus::Released);
    assert_eq!(app.get_stock(a).await.reserved, 0);
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_reservation_id_reused_with_other_lines_or_order_is_refused() {
    let mut app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    app.stock(a, 10).await;
    app.stock(b, 10).await;
    let (id, order) = (Uuid::new_v4(), Uuid::new_v4());
    app.client
        .reserve(reserve_request(id, order, &[(a, 2)]))
        .await
        .unwrap();
    for (what, request) in [
        ("quantity", reserve_request(id, order, &[(a, 3)])),
        ("product", reserve_request(id, order, &[(b, 2)])),
        ("extra line", reserve_request(id, order, &[(a, 2), (b, 1)])),
        ("order", reserve_request(id, Uuid::new_v4(), &[(a, 2)])),
    ] {
        let err = app.client.reserve(request).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{what}: {err:?}");
        assert_eq!(violated_fields(&err), vec!["reservation_id"], "{what}");
    }
    assert_eq!(app.get_stock(a).await.reserved, 2);
    assert_eq!(app.get_stock(b).await.reserved, 0);
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_reserve_hold_stock_once() {
    let mut app = spawn_app_with(unthrottled).await;
    let product = Uuid::new_v4();
    app.stock(product, 100).await;
    let (id, order) = (Uuid::new_v4(), Uuid::new_v4());
    let start = Arc::new(Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let mut client = app.client.clone();
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                client
                    .reserve(reserve_request(id, order, &[(product, 7)]))
                    .await
                    .map(|r| r.into_inner().reservation.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().unwrap());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(app.get_stock(product).await.reserved, 7);
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

#[tokio::test]
async fn release_and_commit_repeat_as_no_ops_and_refuse_the_other_final_state() {
    let mut app = spawn_app().await;
    let product = Uuid::new_v4();
    app.stock(product, 10).await;
    let released = app.reserve(&[(product, 3)]).await.reservation_id;
    let committed = app.reserve(&[(product, 4)]).await.reservation_id;

    for _ in 0..2 {
        assert_eq!(
            release(&mut app, &released).await.unwrap(),
            ReservationStatus::Released
        );
        assert_eq!(
            commit(&mut app, &committed).await.unwrap(),
            ReservationStatus::Committed
        );
    }
    let stock = app.get_stock(product).await;
    assert_eq!(
        (
            stock.on_hand,
            stock.available,
            stock.reserved,
            stock.committed
        ),
        (10, 6, 0, 4)
    );

    let err = release(&mut app, &committed).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        error_info(&err),
        Some((
            "RESERVATION_COMMITTED".into(),
            "RESERVATION_STATUS_COMMITTED".into()
        ))
    );
    let err = commit(&mut app, &released).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(
        error_info(&err),
        Some((
            "RESERVATION_RELEASED".into(),
            "RESERVATION_STATUS_RELEASED".into()
        ))
    );
    assert_eq!(
        app.get_stock(product).await,
        stock,
        "refusals change nothing"
    );

    // One release, one event, however often Release was called.
    let events: Vec<StockReleased> = app.published(inventory::events::STOCK_RELEASED).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reservation_id, released);
    assert_eq!(events[0].reason, "payment declined");
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

#[tokio::test]
async fn release_or_commit_of_an_unknown_reservation_is_not_found() {
    let mut app = spawn_app().await;
    let unknown = Uuid::new_v4().to_string();
    assert_eq!(
        release(&mut app, &unknown).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        commit(&mut app, &unknown).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

fn adjust(product: Uuid, delta: i64, reason: &str, key: &str) -> AdjustStockRequest {
    AdjustStockRequest {
        product_id: product.to_string(),
        delta,
        reason: reason.into(),
        idempotency_key: key.into(),
    }
}

#[tokio::test]
async fn an_adjustment_retry_returns_the_first_answer_and_adjusts_once() {
    let mut app = spawn_app().await;
    let product = Uuid::new_v4();
    let first = app
        .client
        .adjust_stock(adjust(product, 5, "goods received", "delivery-1"))
        .await
        .unwrap()
        .into_inner();
    app.stock(product, 1).await;
    let again = app
        .client
        .adjust_stock(adjust(product, 5, "goods received", "delivery-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again, "the first call's stock level, not today's");
    assert_eq!(app.get_stock(product).await.on_hand, 6);
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_adjustment_key_reused_with_another_body_is_refused() {
    let mut app = spawn_app().await;
    let product = Uuid::new_v4();
    app.client
        .adjust_stock(adjust(product, 5, "goods received", "delivery-2"))
        .await
        .unwrap();
    for (what, request) in [
        ("delta", adjust(product, 6, "goods received", "delivery-2")),
        ("reason", adjust(product, 5, "stocktake", "delivery-2")),
        (
            "product",
            adjust(Uuid::new_v4(), 5, "goods received", "delivery-2"),
        ),
    ] {
        let err = app.client.adjust_stock(request).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{what}: {err:?}");
        assert_eq!(violated_fields(&err), vec!["idempotency_key"], "{what}");
    }
    assert_eq!(app.get_stock(product).await.on_hand, 5);
    assert_conserved(&app.db).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_adjustment_adjust_once() {
    let mut app = spawn_app_with(unthrottled).await;
    let product = Uuid::new_v4();
    let start = Arc::new(Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let mut client = app.client.clone();
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                client
                    .adjust_stock(adjust(product, 9, "goods received", "delivery-3"))
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().unwrap());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(app.get_stock(product).await.on_hand, 9);
    assert_conserved(&app.db).await;
    app.shutdown().await;
}
