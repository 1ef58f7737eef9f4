//! `meshctl trace ORDER_ID` and `meshctl trace --last`: a trace from the receiver `up` runs,
//! drawn as a waterfall (`shop_tracestore::render`) or printed as JSON.
//!
//! An order's trace is the one its saga's steps belong to (`saga.id` is the order id on every
//! step, and the steps continue the PlaceOrder request's trace); `--last` is the latest trace
//! whose root is a PlaceOrder.

use std::path::Path;
use std::time::Duration;

use shop_tracestore::{StoredSpan, TraceQuery};

use crate::TraceArgs;
use crate::error::{MeshError, Result};
use crate::probe;
use crate::state::MeshState;

/// The root span of an order's trace.
pub const PLACE_ORDER: &str = "shop.orders.v1.OrderService/PlaceOrder";

/// Largest answer read (a trace of a few thousand spans).
const ANSWER_LIMIT: u64 = 32 << 20;

/// The query for `args`.
#[must_use]
pub fn query(args: &TraceArgs) -> TraceQuery {
    match (&args.order_id, args.last) {
        (Some(order_id), false) => TraceQuery {
            attribute: Some("saga.id".into()),
            value: Some(order_id.clone()),
            ..TraceQuery::default()
        },
        _ => TraceQuery {
            root: Some(PLACE_ORDER.into()),
            ..TraceQuery::default()
        },
    }
}

/// Runs `meshctl trace`; `Ok(false)` when there is no such trace.
pub async fn trace(state_dir: &Path, args: &TraceArgs) -> Result<bool> {
    let state = MeshState::load(state_dir)?
        .ok_or_else(|| MeshError::NotRunning(state_dir.to_path_buf()))?;
    let Some(receiver) = state.traces else {
        return Err(MeshError::Usage(
            "this mesh runs without a trace receiver (`up --no-traces`)".into(),
        ));
    };
    let path = format!("/trace?{}", query(args).to_query_string());
    // Spans arrive a moment after they end (the services export every 200 ms).
    let mut spans = Vec::new();
    for attempt in 0..10 {
        let answer = probe::http_get(receiver, &path, ANSWER_LIMIT)
            .await
            .ok_or_else(|| {
                MeshError::Usage(format!("no answer from the trace receiver at {receiver}"))
            })?;
        let body = match answer.split_once("\r\n\r\n") {
            Some((head, body))
                if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") =>
            {
                body
            }
            _ => {
                let status = answer.lines().next().unwrap_or_default();
                return Err(MeshError::Usage(format!(
                    "the trace receiver at {receiver} answered {status:?}"
                )));
            }
        };
        spans = serde_json::from_str::<Vec<StoredSpan>>(body).map_err(|e| {
            MeshError::Usage(format!("the trace receiver answered something else: {e}"))
        })?;
        if !spans.is_empty() || attempt == 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if args.json {
        let json = serde_json::to_string_pretty(&spans)
            .map_err(|e| MeshError::Usage(format!("cannot print the spans: {e}")))?;
        println!("{json}");
    } else {
        print!("{}", shop_tracestore::render(&spans));
    }
    Ok(!spans.is_empty())
}
