//! Reservations neither committed nor released are released by the sweeper after the TTL,
//! with one StockReleased each.

use std::time::Duration;

use shop_proto::inventory::{CommitRequest, ReleaseRequest, ReservationStatus, StockReleased};
use shop_testkit::wait_until;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{assert_conserved, error_info, spawn_app_with};

#[tokio::test]
async fn an_expired_reservation_is_released_once_and_announced_once() {
    let mut app = spawn_app_with(|config| {
        config.stock.reservation_ttl_secs = 2.0;
        config.stock.sweep_interval_ms = 50;
    })
    .await;
    let product = Uuid::new_v4();
    app.stock(product, 10).await;
    let abandoned = app.reserve(&[(product, 3)]).await;
    let kept = app.reserve(&[(product, 4)]).await;
    let (created, expires) = (abandoned.created_at.unwrap(), abandoned.expires_at.unwrap());
    assert!(
        (expires.seconds - created.seconds - 2).abs() <= 1,
        "{created:?} {expires:?}"
    );
    app.client
        .commit(CommitRequest {
            reservation_id: kept.reservation_id.clone(),
        })
        .await
        .unwrap();

    let mut client = app.client.clone();
    wait_until(Duration::from_secs(20), || {
        let mut client = client.clone();
        async move {
            let stock = client
                .get_stock(shop_proto::inventory::GetStockRequest {
                    product_id: product.to_string(),
                })
                .await
                .unwrap()
                .into_inner()
                .stock
                .unwrap();
            stock.reserved == 0
        }
    })
    .await
    .expect("the sweeper releases the reservation");
    let stock = app.get_stock(product).await;
    assert_eq!(
        (
            stock.on_hand,
            stock.available,
            stock.reserved,
            stock.committed
        ),
        (10, 6, 0, 4),
        "the committed reservation is not swept"
    );

    // The saga comes back too late: a Commit is refused with the final state, a Release
    // answers with the released reservation.
    let err = client
        .commit(CommitRequest {
            reservation_id: abandoned.reservation_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        error_info(&err).map(|(_, status)| status),
        Some("RESERVATION_STATUS_RELEASED".into())
    );
    let released = client
        .release(ReleaseRequest {
            reservation_id: abandoned.reservation_id.clone(),
            reason: "payment declined".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    assert_eq!(released.status(), ReservationStatus::Released);

    // Give a sweeper that re-released what it had released many more rounds to do so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events: Vec<StockReleased> = app.published(inventory::events::STOCK_RELEASED).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reservation_id, abandoned.reservation_id);
    assert_eq!(events[0].order_id, abandoned.order_id);
    assert_eq!(events[0].reason, inventory::events::REASON_EXPIRED);
    assert_eq!(events[0].lines, abandoned.lines);
    // Released at expiry, not before it: the database's clock decides both instants.
    let at = events[0].occurred_at.unwrap();
    assert!(
        (at.seconds, at.nanos) >= (expires.seconds, expires.nanos),
        "released at {at:?}, before its expiry {expires:?}"
    );
    assert_conserved(&app.db).await;
    app.shutdown().await;
}
