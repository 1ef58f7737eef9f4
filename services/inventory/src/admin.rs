//! `GET /admin/state` on the admin port: every stock row, every reservation and the outbox,
//! from inventory's own database, in the shape `meshctl check` reads
//! (`shop_invariants::types::InventoryState`:
//! `{"stock":[{"product_id","on_hand","reserved","committed","available"}],
//! "reservations":[{"reservation_id","order_id","status","lines":[{"product_id","quantity"}],
//! "created_at","updated_at"}],"outbox":{"unpublished","parked","oldest_unpublished_at"}}`,
//! statuses as the proto enum names without prefix, timestamps RFC 3339). Stock and
//! reservations come from one snapshot, so they can be checked against each other.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;
use shop_runtime::admin_state::{Failure, OutboxState, failed, outbox_state, rfc3339};

use crate::{
    domain::{Reservation, ReservationStatus, Stock},
    store::PgInventoryStore,
};

/// The body of `GET /admin/state`.
#[derive(Debug, Serialize)]
pub struct InventoryState {
    pub stock: Vec<StockRow>,
    pub reservations: Vec<ReservationRow>,
    pub outbox: OutboxState,
}

/// The stock of one product.
#[derive(Debug, Serialize)]
pub struct StockRow {
    pub product_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub committed: i64,
    pub available: i64,
}

/// One reservation and its lines.
#[derive(Debug, Serialize)]
pub struct ReservationRow {
    pub reservation_id: String,
    pub order_id: String,
    pub status: &'static str,
    pub lines: Vec<LineRow>,
    pub created_at: String,
    pub updated_at: String,
}

/// A quantity of one product.
#[derive(Debug, Serialize)]
pub struct LineRow {
    pub product_id: String,
    pub quantity: i64,
}

/// The admin routes inventory adds beside `/livez`, `/readyz` and `/metrics`.
pub fn routes(store: PgInventoryStore) -> Router {
    Router::new()
        .route("/admin/state", get(state))
        .with_state(store)
}

fn status_name(status: ReservationStatus) -> &'static str {
    match status {
        ReservationStatus::Reserved => "RESERVED",
        ReservationStatus::Released => "RELEASED",
        ReservationStatus::Committed => "COMMITTED",
    }
}

fn stock_row(stock: &Stock) -> StockRow {
    StockRow {
        product_id: stock.product_id.to_string(),
        on_hand: stock.on_hand,
        reserved: stock.reserved,
        committed: stock.committed,
        available: stock.available,
    }
}

fn reservation_row(reservation: &Reservation) -> Result<ReservationRow, Failure> {
    Ok(ReservationRow {
        reservation_id: reservation.id.to_string(),
        order_id: reservation.order_id.to_string(),
        status: status_name(reservation.status),
        lines: reservation
            .lines
            .iter()
            .map(|line| LineRow {
                product_id: line.product_id.to_string(),
                quantity: line.quantity,
            })
            .collect(),
        created_at: rfc3339(reservation.created_at)?,
        updated_at: rfc3339(reservation.updated_at)?,
    })
}

async fn state(State(store): State<PgInventoryStore>) -> Result<Json<InventoryState>, Failure> {
    let snapshot = store.snapshot().await.map_err(|e| failed("stock", &e))?;
    let reservations = snapshot
        .reservations
        .iter()
        .map(reservation_row)
        .collect::<Result<_, _>>()?;
    let outbox = outbox_state(store.pool()).await?;
    Ok(Json(InventoryState {
        stock: snapshot.stock.iter().map(stock_row).collect(),
        reservations,
        outbox,
    }))
}
