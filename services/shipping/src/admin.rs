//! `GET /admin/state` on the admin port: every shipment and the outbox, from shipping's own
//! database, in the shape `meshctl check` reads (`shop_invariants::types::ShippingState`:
//! `{"shipments":[{"shipment_id","order_id","status","created_at","updated_at"}],
//! "outbox":{"unpublished","parked","oldest_unpublished_at"}}`, statuses as the proto enum
//! names without prefix, timestamps RFC 3339).

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde::Serialize;
use sqlx::PgPool;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

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

/// The outbox's backlog and its parked rows.
#[derive(Debug, Serialize)]
pub struct OutboxState {
    pub unpublished: i64,
    pub parked: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_unpublished_at: Option<String>,
}

/// The admin routes shipping adds beside `/livez`, `/readyz` and `/metrics`.
pub fn routes(store: PgShippingStore) -> Router {
    Router::new()
        .route("/admin/state", get(state))
        .with_state(store)
}

type Failure = (StatusCode, String);

fn failed(what: &str, err: &dyn std::fmt::Display) -> Failure {
    tracing::warn!(error = %err, "/admin/state: {what}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{what}: {err}\n"),
    )
}

fn rfc3339(at: OffsetDateTime) -> Result<String, Failure> {
    at.format(&Rfc3339).map_err(|e| failed("timestamp", &e))
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

async fn outbox_state(pool: &PgPool) -> Result<OutboxState, Failure> {
    let lag = shop_outbox::lag(pool)
        .await
        .map_err(|e| failed("outbox", &e))?;
    let parked = shop_outbox::dead_letter_count(pool)
        .await
        .map_err(|e| failed("outbox", &e))?;
    let oldest = if lag.unpublished > 0 {
        let age = time::Duration::try_from(lag.oldest_age).unwrap_or_default();
        Some(rfc3339(OffsetDateTime::now_utc() - age)?)
    } else {
        None
    };
    Ok(OutboxState {
        unpublished: lag.unpublished,
        parked,
        oldest_unpublished_at: oldest,
    })
}
