//! `GET /admin/state` on the admin port: every shipment and the outbox, from shipping's own
//! database, in the shape `meshctl check` reads (`shop_invariants::types::ShippingState`:
//! `{"shipments":[{"shipment_id","order_id","status","created_at","updated_at"}],
//! "outbox":{"unpublished","parked","oldest_unpublished_at"}}`, statuses as the proto enum
//! names without prefix, timestamps RFC 3339).

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;
use shop_runtime::admin_state::{Failure, OutboxState, failed, outbox_state, rfc3339};

use crate::{domain::ShipmentStatus, store::PgShippingStore};

/// The body of `GET /admin/state`.
#[derive(Debug, Serialize)]
pub struct ShippingState {
    pub shipments: Vec<ShipmentRow>,
    pub outbox: OutboxState,
}

/// One shipment.
#[derive(Debug, Serialize)]
pub struct ShipmentRow {
    pub shipment_id: String,
    pub order_id: String,
    pub status: &'static str,
    pub created_at: String,
    pub updated_at: String,
}

/// The admin routes shipping adds beside `/livez`, `/readyz` and `/metrics`.
pub fn routes(store: PgShippingStore) -> Router {
    Router::new()
        .route("/admin/state", get(state))
        .with_state(store)
}

async fn state(State(store): State<PgShippingStore>) -> Result<Json<ShippingState>, Failure> {
    let summaries = store
        .summaries()
        .await
        .map_err(|e| failed("shipments", &e))?;
    let mut shipments = Vec::with_capacity(summaries.len());
    for row in summaries {
        let status = ShipmentStatus::parse(&row.status)
            .ok_or_else(|| failed("shipments", &format!("status {:?}", row.status)))?;
        shipments.push(ShipmentRow {
            shipment_id: row.id.to_string(),
            order_id: row.order_id.to_string(),
            status: status.name(),
            created_at: rfc3339(row.created_at)?,
            updated_at: rfc3339(row.updated_at)?,
        });
    }
    let outbox = outbox_state(store.pool()).await?;
    Ok(Json(ShippingState { shipments, outbox }))
}
