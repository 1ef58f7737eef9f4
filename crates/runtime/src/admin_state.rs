//! What every service's `GET /admin/state` page (its own routes on the admin port, read by
//! `meshctl check` and the invariant checker) has in common: the failure shape, RFC 3339
//! timestamps, and the outbox's backlog (`{"unpublished","parked","oldest_unpublished_at"}`,
//! the shape `shop_invariants::types::OutboxState` reads).

use axum::http::StatusCode;
use serde::Serialize;
use sqlx::PgPool;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// A failed admin read: 500 with what failed and why.
pub type Failure = (StatusCode, String);

/// Logs and returns the failure of reading `what`.
pub fn failed(what: &str, err: &dyn std::fmt::Display) -> Failure {
    tracing::warn!(error = %err, "admin: {what}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{what}: {err}\n"),
    )
}

/// `at` as RFC 3339.
pub fn rfc3339(at: OffsetDateTime) -> Result<String, Failure> {
    at.format(&Rfc3339).map_err(|e| failed("timestamp", &e))
}

/// The outbox's backlog and its parked rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxState {
    /// Rows not yet published.
    pub unpublished: i64,
    /// Rows parked as dead letters (never published; need a person).
    pub parked: i64,
    /// When the oldest unpublished row was written; absent when none is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_unpublished_at: Option<String>,
}

/// Reads the outbox of the service's database.
pub async fn outbox_state(pool: &PgPool) -> Result<OutboxState, Failure> {
    let lag = shop_outbox::lag(pool)
        .await
        .map_err(|e| failed("outbox", &e))?;
    let parked = shop_outbox::dead_letter_count(pool)
        .await
        .map_err(|e| failed("outbox", &e))?;
    let oldest_unpublished_at = if lag.unpublished > 0 {
        let age = time::Duration::try_from(lag.oldest_age).unwrap_or_default();
        Some(rfc3339(OffsetDateTime::now_utc() - age)?)
    } else {
        None
    };
    Ok(OutboxState {
        unpublished: lag.unpublished,
        parked,
        oldest_unpublished_at,
    })
}
