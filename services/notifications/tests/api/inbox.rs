//! Each durable consumer has its own inbox, old entries are purged on schedule, and the
//! database migrates twice without harm.

use std::time::Duration;

use notifications::App;
use shop_events::Inbox;
use shop_proto::{identity::UserRegistered, orders::OrderConfirmed};
use shop_testkit::{Nats, Postgres, wait_until};
use uuid::Uuid;

use crate::helpers::{config, spawn_app, spawn_app_with};

const DURABLES: [&str; 3] = [
    "notifications-user-events",
    "notifications-order-events",
    "notifications-shipping-events",
];

#[tokio::test]
async fn each_durable_consumer_claims_in_its_own_inbox() {
    let app = spawn_app().await;
    let user = Uuid::now_v7().to_string();
    let registered = app
        .publish(UserRegistered {
            user_id: user.clone(),
            email: "ada@example.com".into(),
            display_name: "Ada".into(),
            occurred_at: None,
        })
        .await;
    let confirmed = app
        .publish(OrderConfirmed {
            order_id: Uuid::now_v7().to_string(),
            customer_id: user,
            ..Default::default()
        })
        .await;
    let (users, orders) = (Inbox::new(DURABLES[0]), Inbox::new(DURABLES[1]));
    wait_until(Duration::from_secs(30), || async {
        users.contains(&app.pool, registered).await.unwrap()
            && orders.contains(&app.pool, confirmed).await.unwrap()
    })
    .await
    .expect("each event is claimed in its consumer's inbox");
    assert!(!users.contains(&app.pool, confirmed).await.unwrap());
    assert!(!orders.contains(&app.pool, registered).await.unwrap());
    let scopes: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT consumer FROM inbox ORDER BY consumer")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(scopes, vec![DURABLES[1], DURABLES[0]]);
}

#[tokio::test]
async fn old_inbox_entries_are_purged_on_schedule_and_recent_ones_kept() {
    let app = spawn_app_with(|config| config.inbox.inbox_purge_interval_secs = 0.2).await;
    for durable in DURABLES {
        for age_days in [9, 1] {
            sqlx::query(
                "INSERT INTO inbox (consumer, event_id, processed_at) \
                 VALUES ($1, $2, now() - make_interval(days => $3))",
            )
            .bind(durable)
            .bind(Uuid::now_v7())
            .bind(age_days)
            .execute(&app.pool)
            .await
            .unwrap();
        }
    }
    let count = |sql: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    wait_until(Duration::from_secs(30), || async {
        count("SELECT count(*) FROM inbox WHERE processed_at < now() - interval '8 days'").await
            == 0
    })
    .await
    .expect("entries older than the 8-day retention are purged");
    assert_eq!(
        count("SELECT count(*) FROM inbox").await,
        3,
        "recent ones stay"
    );
}

#[tokio::test]
async fn a_retention_within_the_streams_max_age_is_refused_at_start() {
    let postgres = Postgres::start().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let mut config = config(postgres.fresh_database().await.unwrap(), &nats);
    config.inbox.inbox_retention_secs = 24.0 * 3600.0;
    let err = App::build(config).await.expect_err("refused");
    assert!(err.to_string().contains("INBOX_RETENTION_SECS"), "{err}");
}

#[tokio::test]
async fn a_database_migrated_twice_keeps_one_row_per_version() {
    let postgres = Postgres::start().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let url = postgres.fresh_database().await.unwrap();
    for _ in 0..2 {
        drop(App::build(config(url.clone(), &nats)).await.unwrap());
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(versions, vec![1, 1_001_001]);
}
