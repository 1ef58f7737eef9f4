//! Nothing lost, nothing doubled: users register while nats-server is killed with SIGKILL and
//! restarted; every user still gets exactly one welcome notification.
//!
//! identity writes each account and its UserRegistered event in one transaction (outbox); its
//! relay publishes with JetStream acks and retries while NATS is down; notifications applies
//! each event through its inbox. The server fsyncs before acking (`sync_interval: always`), so
//! an acked event survives the kill.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::{collections::HashMap, time::Duration};

use shop_e2e::{start_identity, start_notifications};
use shop_proto::{
    identity::{RegisterRequest, identity_service_client::IdentityServiceClient},
    notifications::{
        ListNotificationsRequest, NotificationKind, WatchNotificationsRequest,
        notification_service_client::NotificationServiceClient,
    },
};
use shop_testkit::{Nats, Postgres, wait_until};

const USERS: usize = 60;

#[tokio::test]
async fn every_user_gets_exactly_one_welcome_despite_a_nats_crash() {
    let postgres = Postgres::start().await.unwrap();
    let mut nats = Nats::start().await.unwrap();
    assert!(
        nats.syncs_always(),
        "durability needs a nats-server with sync_interval: always"
    );
    let identity = start_identity(&postgres, &nats).await.unwrap();
    let notifications = start_notifications(&postgres, &nats).await.unwrap();
    let mut users = IdentityServiceClient::connect(format!("http://{}", identity.addr))
        .await
        .unwrap();
    let mut inbox = NotificationServiceClient::connect(format!("http://{}", notifications.addr))
        .await
        .unwrap();

    let mut user_ids = Vec::new();
    for i in 0..USERS {
        if i == USERS / 3 {
            nats.kill9().await.unwrap();
        }
        if i == 2 * USERS / 3 {
            nats.restart().await.unwrap();
        }
        // Registration never depends on NATS being up: the event waits in the outbox.
        let user = users
            .register(RegisterRequest {
                email: format!("user{i}@example.com"),
                password: "correct horse battery".into(),
                display_name: format!("User {i}"),
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        user_ids.push(user.user_id);
    }

    let counts = |inbox: NotificationServiceClient<_>, ids: Vec<String>| async move {
        let mut inbox = inbox;
        let mut counts = HashMap::new();
        for id in ids {
            let listed = inbox
                .list_notifications(ListNotificationsRequest {
                    user_id: id.clone(),
                    page_size: 10,
                    page_token: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .notifications;
            assert!(
                listed
                    .iter()
                    .all(|n| n.kind == NotificationKind::Welcome as i32)
            );
            counts.insert(id, listed.len());
        }
        counts
    };
    wait_until(Duration::from_secs(60), || {
        let (inbox, ids) = (inbox.clone(), user_ids.clone());
        async move { counts(inbox, ids).await.values().all(|&n| n >= 1) }
    })
    .await
    .expect("every user got a welcome notification");

    // Let any redelivery or relay retry land, then check nothing was applied twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let final_counts = counts(inbox.clone(), user_ids.clone()).await;
    let doubled: Vec<_> = final_counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubled.is_empty(),
        "users without exactly one welcome: {doubled:?}"
    );

    // A watcher sees the next one arrive.
    let mut watch = inbox
        .watch_notifications(WatchNotificationsRequest {
            user_id: String::new(),
        })
        .await;
    assert!(
        watch.is_err(),
        "watching without a user id is INVALID_ARGUMENT"
    );
    let late = users
        .register(RegisterRequest {
            email: "late@example.com".into(),
            password: "correct horse battery".into(),
            display_name: "Late".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let mut stream = inbox
        .watch_notifications(WatchNotificationsRequest {
            user_id: late.user_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let _ = &mut watch;
    let first = tokio::time::timeout(Duration::from_secs(30), stream.message()).await;
    // The notification may have been stored before the watch began; then it is listed instead.
    match first {
        Ok(Ok(Some(update))) => assert_eq!(update.notification.unwrap().user_id, late.user_id),
        _ => {
            let listed = counts(inbox.clone(), vec![late.user_id.clone()]).await;
            assert_eq!(listed[&late.user_id], 1);
        }
    }
}
