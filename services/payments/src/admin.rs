//! `GET /admin/state` on the admin port: every payment with its ledger's balances and capture
//! count, and the outbox, from payments' own database, in the shape `meshctl check` reads
//! (`shop_invariants::types::PaymentsState`:
//! `{"payments":[{"payment_id","order_id","status","currency","authorized_minor",
//! "captured_minor","refunded_minor","captures","created_at","updated_at"}],
//! "outbox":{"unpublished","parked","oldest_unpublished_at"}}`, amounts in integer minor units
//! of `currency`, statuses as the proto enum names without prefix, timestamps RFC 3339).

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;
use shop_runtime::admin_state::{Failure, OutboxState, failed, outbox_state, rfc3339};

use crate::{
    domain::Status,
    store::{PaymentSummary, PgPaymentStore},
};

/// The body of `GET /admin/state`.
#[derive(Debug, Serialize)]
pub struct PaymentsState {
    pub payments: Vec<PaymentRow>,
    pub outbox: OutboxState,
}

/// One payment.
#[derive(Debug, Serialize)]
pub struct PaymentRow {
    pub payment_id: String,
    pub order_id: String,
    pub status: &'static str,
    pub currency: String,
    pub authorized_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    /// Capture entries in the ledger.
    pub captures: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// The admin routes payments adds beside `/livez`, `/readyz` and `/metrics`.
pub fn routes(store: PgPaymentStore) -> Router {
    Router::new()
        .route("/admin/state", get(state))
        .with_state(store)
}

/// The proto enum name without its `PAYMENT_STATUS_` prefix.
fn status_name(status: Status) -> &'static str {
    match status {
        Status::Authorized => "AUTHORIZED",
        Status::Declined => "DECLINED",
        Status::Voided => "VOIDED",
        Status::Captured => "CAPTURED",
        Status::PartiallyRefunded => "PARTIALLY_REFUNDED",
        Status::Refunded => "REFUNDED",
    }
}

fn payment_row(row: PaymentSummary) -> Result<PaymentRow, Failure> {
    let status = row.status().map_err(|e| failed("payments", &e))?;
    Ok(PaymentRow {
        payment_id: row.id.to_string(),
        order_id: row.order_id.to_string(),
        status: status_name(status),
        authorized_minor: row.authorized_minor,
        captured_minor: row.captured_minor,
        refunded_minor: row.refunded_minor,
        captures: row.captures,
        created_at: rfc3339(row.created_at)?,
        updated_at: rfc3339(row.updated_at)?,
        currency: row.currency,
    })
}

async fn state(State(store): State<PgPaymentStore>) -> Result<Json<PaymentsState>, Failure> {
    let summaries = store
        .summaries()
        .await
        .map_err(|e| failed("payments", &e))?;
    let payments = summaries
        .into_iter()
        .map(payment_row)
        .collect::<Result<_, _>>()?;
    let outbox = outbox_state(store.pool()).await?;
    Ok(Json(PaymentsState { payments, outbox }))
}
