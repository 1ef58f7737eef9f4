//! Notifications as this service reasons about them, and the text each event becomes.
//! No I/O here.

use shop_proto::{
    identity::UserRegistered,
    orders::{OrderCancelled, OrderConfirmed},
    shipping::ShipmentScheduled,
};
use time::OffsetDateTime;
use uuid::Uuid;

/// What a notification is about. Numbers match `shop.notifications.v1.NotificationKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum Kind {
    Welcome = 1,
    OrderConfirmed = 2,
    OrderCancelled = 3,
    ShipmentScheduled = 4,
}

/// A notification to be stored for the event `source_event_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub user_id: Uuid,
    pub kind: Kind,
    pub title: String,
    pub body: String,
    pub order_id: Option<Uuid>,
    pub source_event_id: Uuid,
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Notification {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: i16,
    pub title: String,
    pub body: String,
    pub order_id: Option<Uuid>,
    pub source_event_id: Uuid,
    pub created_at: OffsetDateTime,
}

/// An event whose ids do not parse: it can never be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("event field {field} is not a UUID: {value:?}")]
pub struct MalformedEvent {
    pub field: &'static str,
    pub value: String,
}

fn uuid(field: &'static str, value: &str) -> Result<Uuid, MalformedEvent> {
    Uuid::parse_str(value).map_err(|_| MalformedEvent {
        field,
        value: value.to_owned(),
    })
}

pub fn welcome(event: &UserRegistered, event_id: Uuid) -> Result<NewNotification, MalformedEvent> {
    Ok(NewNotification {
        user_id: uuid("user_id", &event.user_id)?,
        kind: Kind::Welcome,
        title: format!("Welcome, {}!", event.display_name),
        body: format!("Your account {} is ready. Happy shopping.", event.email),
        order_id: None,
        source_event_id: event_id,
    })
}

pub fn order_confirmed(
    event: &OrderConfirmed,
    event_id: Uuid,
) -> Result<NewNotification, MalformedEvent> {
    let total = event
        .total
        .as_ref()
        .map(|m| {
            format!(
                " for {}.{:02} {}",
                m.units,
                m.nanos / 10_000_000,
                m.currency_code
            )
        })
        .unwrap_or_default();
    Ok(NewNotification {
        user_id: uuid("customer_id", &event.customer_id)?,
        kind: Kind::OrderConfirmed,
        title: "Order confirmed".into(),
        body: format!("Your order {}{total} is confirmed.", event.order_id),
        order_id: Some(uuid("order_id", &event.order_id)?),
        source_event_id: event_id,
    })
}

pub fn order_cancelled(
    event: &OrderCancelled,
    event_id: Uuid,
) -> Result<NewNotification, MalformedEvent> {
    let detail = if event.detail.is_empty() {
        String::new()
    } else {
        format!(": {}", event.detail)
    };
    Ok(NewNotification {
        user_id: uuid("customer_id", &event.customer_id)?,
        kind: Kind::OrderCancelled,
        title: "Order cancelled".into(),
        body: format!("Your order {} was cancelled{detail}.", event.order_id),
        order_id: Some(uuid("order_id", &event.order_id)?),
        source_event_id: event_id,
    })
}

pub fn shipment_scheduled(
    event: &ShipmentScheduled,
    event_id: Uuid,
) -> Result<NewNotification, MalformedEvent> {
    Ok(NewNotification {
        user_id: uuid("customer_id", &event.customer_id)?,
        kind: Kind::ShipmentScheduled,
        title: "Shipment scheduled".into(),
        body: format!(
            "Your order {} ships with {} (tracking {}).",
            event.order_id, event.carrier, event.tracking_number
        ),
        order_id: Some(uuid("order_id", &event.order_id)?),
        source_event_id: event_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welcome_names_the_user_and_rejects_bad_ids() {
        let event = UserRegistered {
            user_id: Uuid::nil().to_string(),
            email: "ada@example.com".into(),
            display_name: "Ada".into(),
            occurred_at: None,
        };
        let id = Uuid::now_v7();
        let n = welcome(&event, id).unwrap();
        assert_eq!(n.title, "Welcome, Ada!");
        assert_eq!(n.source_event_id, id);
        let bad = UserRegistered {
            user_id: "x".into(),
            ..event
        };
        assert_eq!(welcome(&bad, id).unwrap_err().field, "user_id");
    }
}
