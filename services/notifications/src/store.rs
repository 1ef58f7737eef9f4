//! The notifications PostgreSQL store. The only module that speaks SQL.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{NewNotification, Notification};

/// Channel on which a committed notification's id is announced to every replica.
pub const NOTIFY_CHANNEL: &str = "shop_notifications";

const COLUMNS: &str = "id, user_id, kind, title, body, order_id, source_event_id, created_at";

/// Stores `new` with its in-app delivery record and announces it once the caller's
/// transaction commits. `None` if a notification for the same source event exists already.
pub async fn insert(
    tx: &mut PgConnection,
    new: &NewNotification,
) -> Result<Option<Notification>, sqlx::Error> {
    let inserted = sqlx::query_as::<_, Notification>(&format!(
        "INSERT INTO notifications (id, user_id, kind, title, body, order_id, source_event_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (source_event_id) DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(new.user_id)
    .bind(new.kind as i16)
    .bind(&new.title)
    .bind(&new.body)
    .bind(new.order_id)
    .bind(new.source_event_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(notification) = inserted else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO delivery_log (notification_id, channel, status) VALUES ($1, 'in_app', 'delivered')",
    )
    .bind(notification.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(notification.id.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(Some(notification))
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Notification>, sqlx::Error> {
    sqlx::query_as::<_, Notification>(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// A user's notifications, newest first, after `before` (exclusive) when given.
pub async fn list(
    pool: &PgPool,
    user_id: Uuid,
    before: Option<Uuid>,
    limit: u32,
) -> Result<(Vec<Notification>, bool), sqlx::Error> {
    let mut rows = sqlx::query_as::<_, Notification>(&format!(
        "SELECT {COLUMNS} FROM notifications \
         WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(user_id)
    .bind(before)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let has_more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok((rows, has_more))
}
