//! `shop.notifications.v1.NotificationService`: listing and watching a user's notifications.

use shop_runtime::authz::require_owner;
use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use shop_proto::{
    common::PageCursor,
    notifications::{self as pb, notification_service_server::NotificationService},
};
use shop_runtime::convert::timestamp;
use shop_runtime::{
    CancellationToken,
    page_token::{self, filter_hash},
};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{domain::Notification, error::NotificationsError, store};

const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_PAGE_SIZE: u32 = 100;

/// The tonic service.
#[derive(Debug, Clone)]
pub struct NotificationsGrpc {
    pool: PgPool,
    updates: broadcast::Sender<Notification>,
    stopping: CancellationToken,
}

impl NotificationsGrpc {
    pub fn new(
        pool: PgPool,
        updates: broadcast::Sender<Notification>,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            pool,
            updates,
            stopping,
        }
    }
}

fn to_pb(n: Notification) -> pb::Notification {
    pb::Notification {
        notification_id: n.id.to_string(),
        user_id: n.user_id.to_string(),
        kind: i32::from(n.kind),
        title: n.title,
        body: n.body,
        order_id: n.order_id.map(|id| id.to_string()).unwrap_or_default(),
        source_event_id: n.source_event_id.to_string(),
        created_at: Some(timestamp(n.created_at)),
    }
}

fn parse_user(value: &str) -> Result<Uuid, NotificationsError> {
    Uuid::parse_str(value).map_err(|_| NotificationsError::InvalidArgument {
        field: "user_id",
        reason: "must be a UUID".into(),
    })
}

fn malformed_token() -> NotificationsError {
    NotificationsError::InvalidArgument {
        field: "page_token",
        reason: "malformed page token".into(),
    }
}

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchNotificationsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl NotificationService for NotificationsGrpc {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        require_owner(&request, "user_id", &request.get_ref().user_id)?;
        let request = request.into_inner();
        let user_id = parse_user(&request.user_id)?;
        let cursor =
            page_token::decode::<PageCursor>(&request.page_token).map_err(|_| malformed_token())?;
        let before = match cursor {
            None => None,
            Some(c) if c.filter_hash == filter_hash(&request.user_id) => {
                Some(Uuid::parse_str(&c.after_id).map_err(|_| malformed_token())?)
            }
            Some(_) => return Err(malformed_token().into()),
        };
        let limit = page_token::page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
        let (rows, has_more) = store::list(&self.pool, user_id, before, limit)
            .await
            .map_err(NotificationsError::from)?;
        let next_page_token = match rows.last() {
            Some(last) if has_more => page_token::encode(&PageCursor {
                after_id: last.id.to_string(),
                filter_hash: filter_hash(&request.user_id),
                ..PageCursor::default()
            }),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows.into_iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    type WatchNotificationsStream = WatchStream;

    async fn watch_notifications(
        &self,
        request: Request<pb::WatchNotificationsRequest>,
    ) -> Result<Response<Self::WatchNotificationsStream>, Status> {
        require_owner(&request, "user_id", &request.get_ref().user_id)?;
        let user_id = parse_user(&request.get_ref().user_id)?;
        let stopping = self.stopping.clone();
        let updates = BroadcastStream::new(self.updates.subscribe())
            .filter_map(move |item| async move {
                match item {
                    Ok(n) if n.user_id == user_id => Some(Ok(pb::WatchNotificationsResponse {
                        notification: Some(to_pb(n)),
                    })),
                    Ok(_) => None,
                    Err(BroadcastStreamRecvError::Lagged(missed)) => {
                        Some(Err(Status::aborted(format!(
                            "watcher fell {missed} notifications behind; list, then watch again"
                        ))))
                    }
                }
            })
            // A lagged watcher gets its error and the stream ends.
            .scan(false, |failed, item| {
                let done = *failed;
                *failed = item.is_err();
                futures::future::ready((!done).then_some(item))
            })
            .take_until(async move { stopping.cancelled().await });
        Ok(Response::new(Box::pin(updates)))
    }
}
