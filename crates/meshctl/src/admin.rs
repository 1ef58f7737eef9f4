//! The services' admin JSON: `GET /admin/state` (outbox backlog; orders adds its saga counts)
//! and orders' `GET /admin/orders/{id}/timeline`. A service without the endpoint answers 404,
//! which is not an error: it has nothing of the kind to report.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::probe;

/// The largest admin answer read.
const MAX_ADMIN_BYTES: u64 = 16 << 20;

/// What asking an admin endpoint gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<T> {
    /// 200 with a body of the expected shape.
    Served(T),
    /// 404: the service has no such endpoint (or no such item).
    NotFound,
    /// No answer, another status, or a body of another shape.
    Failed(String),
}

/// The parts of `GET /admin/state` meshctl shows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AdminState {
    /// Orders' sagas.
    #[serde(default)]
    pub sagas: Option<SagaSummary>,
    /// The service's transactional outbox.
    #[serde(default)]
    pub outbox: Option<OutboxSummary>,
}

/// Saga counts by state and the stuck ones.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SagaSummary {
    /// `running`, `completed`, `compensating`, `compensated`, `stuck` -> count.
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    /// The sagas that need an operator.
    #[serde(default)]
    pub stuck: Vec<StuckSaga>,
}

/// A saga that stopped making progress.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StuckSaga {
    /// Saga id.
    pub id: String,
    /// Why, if known.
    #[serde(default)]
    pub error: Option<String>,
}

/// An outbox's backlog.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OutboxSummary {
    /// Rows not yet published.
    pub unpublished: i64,
    /// Rows the relay gave up on for now.
    #[serde(default)]
    pub parked: i64,
    /// When the oldest unpublished row was written, RFC 3339.
    #[serde(default)]
    pub oldest_unpublished_at: Option<String>,
}

/// One saga's steps, from `GET /admin/orders/{id}/timeline`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Timeline {
    /// Saga id.
    pub saga_id: String,
    /// Saga state.
    pub status: String,
    /// Why it failed, when it did.
    #[serde(default)]
    pub failure: Option<String>,
    /// Steps in the order they ran.
    #[serde(default)]
    pub steps: Vec<TimelineStep>,
    /// The saga that undid the order after it was confirmed (a later cancellation), if any.
    #[serde(default)]
    pub undo: Option<Box<Timeline>>,
}

/// One attempt of a saga step or of its compensation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TimelineStep {
    /// Step name.
    pub step: String,
    /// `action` or `compensation`.
    pub phase: String,
    /// `ok`, `failed`, `transient`, `timeout`, ...
    pub outcome: String,
    /// The error, when it did not succeed.
    #[serde(default)]
    pub error: Option<String>,
    /// Attempt number, from 1.
    #[serde(default)]
    pub attempt: u32,
    /// How long it took, in milliseconds.
    #[serde(default)]
    pub duration_ms: f64,
}

/// `GET /admin/state` of the service on `admin`.
pub async fn state(admin: SocketAddr) -> Answer<AdminState> {
    get_json(admin, "/admin/state").await
}

/// The saga timeline of order `order_id` from orders' admin port.
pub async fn timeline(admin: SocketAddr, order_id: &str) -> Answer<Timeline> {
    get_json(admin, &format!("/admin/orders/{order_id}/timeline")).await
}

async fn get_json<T: DeserializeOwned>(admin: SocketAddr, path: &str) -> Answer<T> {
    match probe::http_get(admin, path, MAX_ADMIN_BYTES).await {
        None => Answer::Failed("no answer".into()),
        Some(response) => parse_response(&response),
    }
}

/// Reads an HTTP response: status line, headers, JSON body.
fn parse_response<T: DeserializeOwned>(response: &str) -> Answer<T> {
    let status = response
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok());
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    match status {
        Some(200) => serde_json::from_str(body)
            .map_or_else(|err| Answer::Failed(format!("body: {err}")), Answer::Served),
        Some(404) => Answer::NotFound,
        Some(code) => Answer::Failed(format!("HTTP {code}")),
        None => Answer::Failed("not HTTP".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_orders_state() {
        let response = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n\
            {\"orders\":[],\"sagas\":{\"counts\":{\"running\":1,\"completed\":3,\"stuck\":0},\
            \"stuck\":[{\"id\":\"s1\",\"error\":\"boom\"}]},\
            \"outbox\":{\"unpublished\":2,\"parked\":1,\"oldest_unpublished_at\":\"2025-01-01T00:00:00Z\"}}";
        let Answer::Served(state) = parse_response::<AdminState>(response) else {
            panic!("not served");
        };
        let sagas = state.sagas.unwrap();
        assert_eq!(sagas.counts["completed"], 3);
        assert_eq!(sagas.stuck[0].error.as_deref(), Some("boom"));
        let outbox = state.outbox.unwrap();
        assert_eq!((outbox.unpublished, outbox.parked), (2, 1));
    }

    #[test]
    fn reads_a_shipping_like_state_without_sagas() {
        let response =
            "HTTP/1.1 200 OK\r\n\r\n{\"shipments\":[],\"outbox\":{\"unpublished\":0,\"parked\":0}}";
        let Answer::Served(state) = parse_response::<AdminState>(response) else {
            panic!("not served");
        };
        assert_eq!(state.sagas, None);
        assert_eq!(state.outbox.unwrap().oldest_unpublished_at, None);
    }

    #[test]
    fn a_404_is_no_endpoint_and_other_answers_fail() {
        assert_eq!(
            parse_response::<AdminState>("HTTP/1.1 404 Not Found\r\n\r\n"),
            Answer::NotFound
        );
        assert!(matches!(
            parse_response::<AdminState>("HTTP/1.1 500 Oops\r\n\r\nx"),
            Answer::Failed(_)
        ));
        assert!(matches!(
            parse_response::<AdminState>("HTTP/1.1 200 OK\r\n\r\nnot json"),
            Answer::Failed(_)
        ));
    }

    #[test]
    fn reads_a_timeline() {
        let response = "HTTP/1.1 200 OK\r\n\r\n{\"saga_id\":\"s\",\"status\":\"completed\",\"steps\":[\
            {\"step\":\"reserve_stock\",\"phase\":\"action\",\"outcome\":\"ok\",\"error\":null,\
            \"attempt\":1,\"started_at\":\"2025-01-01T00:00:00Z\",\"finished_at\":\"2025-01-01T00:00:01Z\",\
            \"duration_ms\":12.5}]}";
        let Answer::Served(timeline) = parse_response::<Timeline>(response) else {
            panic!("not served");
        };
        assert_eq!(timeline.steps[0].step, "reserve_stock");
        assert_eq!(timeline.undo, None);
        assert!((timeline.steps[0].duration_ms - 12.5).abs() < f64::EPSILON);
    }
}
