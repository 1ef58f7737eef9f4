//! Orders' admin routes beside `/livez`, `/readyz` and `/metrics`, for `meshctl` and the
//! invariant checker:
//!
//! - `GET /admin/state`: every order of the read model, the saga runs per status (order and
//!   undo sagas together) with the stuck ones, and the outbox:
//!   `{"orders":[{"order_id","customer_id","status","reservation_id","payment_id",
//!   "total":{"units","nanos","currency_code"},"lines":[{"product_id","quantity"}],
//!   "created_at","updated_at"}],"sagas":{"counts":{status: n},"stuck":[{"id","kind","error"}]},
//!   "outbox":{"unpublished","parked","oldest_unpublished_at"}}` (statuses as the proto enum
//!   names without prefix, timestamps RFC 3339).
//! - `GET /admin/orders/{order_id}/timeline`: the order saga's history, every attempt of every
//!   step: `{"saga_id","status","steps":[{"step","phase","outcome","error","attempt",
//!   "started_at","finished_at","duration_ms"}],"undo":{…}|null}`; 404 for an unknown order.

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use serde::Serialize;
use shop_runtime::admin_state::{Failure, OutboxState, failed, outbox_state, rfc3339};
use uuid::Uuid;

use crate::{
    convert::money_to_pb,
    saga::{ORDER_SAGA, UNDO_SAGA, UndoSaga},
    store::PgOrderStore,
};

#[derive(Debug, Serialize)]
struct MoneyRow {
    units: i64,
    nanos: i32,
    currency_code: String,
}

#[derive(Debug, Serialize)]
struct LineRow {
    product_id: String,
    quantity: i32,
}

#[derive(Debug, Serialize)]
struct OrderRow {
    order_id: String,
    customer_id: String,
    status: &'static str,
    reservation_id: String,
    payment_id: String,
    total: MoneyRow,
    lines: Vec<LineRow>,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Serialize)]
struct StuckRow {
    id: String,
    kind: &'static str,
    error: String,
}

#[derive(Debug, Serialize)]
struct Sagas {
    counts: BTreeMap<String, i64>,
    stuck: Vec<StuckRow>,
}

#[derive(Debug, Serialize)]
struct OrdersState {
    orders: Vec<OrderRow>,
    sagas: Sagas,
    outbox: OutboxState,
}

#[derive(Debug, Serialize)]
struct StepRow {
    step: String,
    phase: &'static str,
    outcome: &'static str,
    error: Option<String>,
    attempt: i32,
    started_at: String,
    finished_at: String,
    duration_ms: f64,
}

#[derive(Debug, Serialize)]
struct Timeline {
    saga_id: String,
    kind: String,
    status: &'static str,
    failure: Option<String>,
    steps: Vec<StepRow>,
}

#[derive(Debug, Serialize)]
struct OrderTimeline {
    #[serde(flatten)]
    saga: Timeline,
    undo: Option<Timeline>,
}

/// The admin routes.
pub fn routes(store: PgOrderStore) -> Router {
    Router::new()
        .route("/admin/state", get(state))
        .route("/admin/orders/{order_id}/timeline", get(timeline))
        .with_state(store)
}

async fn state(State(store): State<PgOrderStore>) -> Result<Json<OrdersState>, Failure> {
    let pool = store.pool();
    let all = store.all().await.map_err(|e| failed("orders", &e))?;
    let mut orders = Vec::with_capacity(all.len());
    for order in all {
        let total = money_to_pb(&order.total);
        orders.push(OrderRow {
            order_id: order.id.to_string(),
            customer_id: order.customer_id.to_string(),
            status: order.status.as_str(),
            reservation_id: order.reservation_id.to_string(),
            payment_id: order.payment_id.clone().unwrap_or_default(),
            total: MoneyRow {
                units: total.units,
                nanos: total.nanos,
                currency_code: total.currency_code,
            },
            lines: order
                .lines
                .iter()
                .map(|l| LineRow {
                    product_id: l.product_id.to_string(),
                    quantity: l.quantity,
                })
                .collect(),
            created_at: rfc3339(order.created_at)?,
            updated_at: rfc3339(order.updated_at)?,
        });
    }
    let mut counts = BTreeMap::new();
    let mut stuck = Vec::new();
    for kind in [ORDER_SAGA, UNDO_SAGA] {
        let by_status = shop_saga::store::counts(pool, kind)
            .await
            .map_err(|e| failed("sagas", &e))?;
        for (status, n) in by_status {
            *counts.entry(status).or_insert(0) += n;
        }
        for run in shop_saga::store::stuck(pool, kind, 100)
            .await
            .map_err(|e| failed("sagas", &e))?
        {
            stuck.push(StuckRow {
                id: run.id.to_string(),
                kind,
                error: run.error,
            });
        }
    }
    let outbox = outbox_state(pool).await?;
    Ok(Json(OrdersState {
        orders,
        sagas: Sagas { counts, stuck },
        outbox,
    }))
}

async fn run_timeline(store: &PgOrderStore, id: Uuid) -> Result<Option<Timeline>, Failure> {
    let pool = store.pool();
    let Some(run) = shop_saga::get(pool, id)
        .await
        .map_err(|e| failed("saga", &e))?
    else {
        return Ok(None);
    };
    let history = shop_saga::store::timeline(pool, id)
        .await
        .map_err(|e| failed("saga", &e))?;
    let mut steps = Vec::with_capacity(history.len());
    for record in history {
        steps.push(StepRow {
            duration_ms: record.duration().as_secs_f64() * 1000.0,
            step: record.step,
            phase: record.phase.as_str(),
            outcome: record.outcome.as_str(),
            error: record.error,
            attempt: record.attempt,
            started_at: rfc3339(record.started_at)?,
            finished_at: rfc3339(record.finished_at)?,
        });
    }
    Ok(Some(Timeline {
        saga_id: run.id.to_string(),
        kind: run.kind,
        status: run.status.as_str(),
        failure: run.failure,
        steps,
    }))
}

async fn timeline(
    State(store): State<PgOrderStore>,
    Path(order_id): Path<String>,
) -> Result<Json<OrderTimeline>, Failure> {
    let not_found = || (StatusCode::NOT_FOUND, format!("no order {order_id}\n"));
    let id = Uuid::parse_str(&order_id).map_err(|_| not_found())?;
    let saga = run_timeline(&store, id).await?.ok_or_else(not_found)?;
    let undo = run_timeline(&store, UndoSaga::run_id(id)).await?;
    Ok(Json(OrderTimeline { saga, undo }))
}
