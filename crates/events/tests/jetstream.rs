//! shop-events against a real nats-server (and PostgreSQL for the inbox).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use async_nats::jetstream;
use shop_events::runner::{HEADER_DLQ_DELIVERIES, HEADER_DLQ_ERROR, HEADER_DLQ_EVENT_ID};
use shop_events::{
    ConsumerRunner, ConsumerSpec, Delivery, EventEnvelope, EventPublisher, EventsError,
    HandlerError, Handlers, Inbox, StreamSpec, inbox,
};
use shop_testkit::{Nats, Postgres, wait_until};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);
const DURABLE: &str = "notifications-welcome";

/// Version 1 of the event, as an older consumer was built.
#[derive(Clone, PartialEq, prost::Message)]
struct UserRegistered {
    #[prost(string, tag = "1")]
    user_id: String,
}

impl prost::Name for UserRegistered {
    const NAME: &'static str = "UserRegistered";
    const PACKAGE: &'static str = "shop.test.v1";
}

/// Version 2 of the same message: a field was added.
#[derive(Clone, PartialEq, prost::Message)]
struct UserRegisteredV2 {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(string, tag = "2")]
    email: String,
}

impl prost::Name for UserRegisteredV2 {
    const NAME: &'static str = "UserRegistered";
    const PACKAGE: &'static str = "shop.test.v1";
}

/// A type nobody in these tests handles.
#[derive(Clone, PartialEq, prost::Message)]
struct PasswordChanged {
    #[prost(string, tag = "1")]
    user_id: String,
}

impl prost::Name for PasswordChanged {
    const NAME: &'static str = "PasswordChanged";
    const PACKAGE: &'static str = "shop.test.v1";
}

struct Bus {
    nats: Nats,
    js: jetstream::Context,
    publisher: EventPublisher,
}

async fn bus() -> Result<Bus> {
    let nats = Nats::start().await?;
    let js = shop_events::connect(&nats.url(), "events-test").await?;
    StreamSpec::for_context("test").ensure(&js).await?;
    StreamSpec::dead_letter().ensure(&js).await?;
    let publisher = EventPublisher::new(js.clone());
    Ok(Bus {
        nats,
        js,
        publisher,
    })
}

fn fast_spec() -> ConsumerSpec {
    ConsumerSpec::new("SHOP_TEST", DURABLE)
        .with_max_deliver(3)
        .with_backoff(vec![Duration::from_millis(20)])
        .with_ack_wait(Duration::from_secs(1))
}

type Task = JoinHandle<Result<(), EventsError>>;

fn spawn_runner(runner: ConsumerRunner) -> (oneshot::Sender<()>, Task) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        runner.run(shutdown).await
    });
    (stop, task)
}

/// True once the consumer has nothing pending or unacked.
async fn drained(js: &jetstream::Context, durable: &str) -> bool {
    let Ok(stream) = js.get_stream("SHOP_TEST").await else {
        return false;
    };
    match stream.consumer_info(durable).await {
        Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
        Err(_) => false,
    }
}

async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(stream) => stream.get_info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}

fn user(id: &str) -> EventEnvelope<UserRegistered> {
    EventEnvelope::new(UserRegistered { user_id: id.into() })
}

#[tokio::test]
async fn provisioning_is_idempotent_and_applies_changes() -> Result<()> {
    let bus = bus().await?;
    for _ in 0..2 {
        StreamSpec::for_context("test").ensure(&bus.js).await?;
        fast_spec().ensure(&bus.js).await?;
    }
    fast_spec().with_max_deliver(7).ensure(&bus.js).await?;
    let mut consumer = fast_spec().with_max_deliver(7).ensure(&bus.js).await?;
    let info = consumer.info().await?;
    // Unlimited: the runner dead-letters by its own count of failures.
    assert_eq!(info.config.max_deliver, -1);
    assert_eq!(info.config.ack_wait, Duration::from_secs(1));
    let stream = bus.js.get_stream("SHOP_TEST").await?.get_info().await?;
    assert_eq!(stream.config.subjects, vec!["shop.test.v1.>".to_owned()]);
    assert_eq!(stream.config.storage, jetstream::stream::StorageType::File);
    Ok(())
}

#[tokio::test]
async fn publishing_an_event_twice_stores_it_once() -> Result<()> {
    let bus = bus().await?;
    let event = user("u1").with_correlation_id("c1");
    let first = bus.publisher.publish(&event).await?;
    let second = bus.publisher.publish(&event).await?;
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(stream_messages(&bus.js, "SHOP_TEST").await, 1);
    let stored = bus
        .js
        .get_stream("SHOP_TEST")
        .await?
        .get_raw_message(1)
        .await?;
    let headers = stored.headers;
    assert_eq!(
        headers.get("shop-event-type").unwrap().as_str(),
        "shop.test.v1.UserRegistered"
    );
    assert_eq!(
        headers.get("Nats-Msg-Id").unwrap().as_str(),
        event.id.to_string()
    );
    assert_eq!(headers.get("shop-correlation-id").unwrap().as_str(), "c1");
    assert_eq!(stored.subject.as_str(), "shop.test.v1.user_registered");
    Ok(())
}

#[tokio::test]
async fn older_consumer_reads_newer_event_and_skips_unknown_types() -> Result<()> {
    let bus = bus().await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Built against version 1.
    let handlers = Handlers::new().on(move |d: Delivery<UserRegistered>| {
        let tx = tx.clone();
        async move {
            tx.send((d.event.user_id, d.meta.schema_version)).unwrap();
            Ok(())
        }
    });
    let (stop, task) = spawn_runner(ConsumerRunner::new(bus.js.clone(), fast_spec(), handlers));
    let unknown = EventEnvelope::new(PasswordChanged {
        user_id: "u0".into(),
    });
    bus.publisher.publish(&unknown).await?;
    let newer = EventEnvelope::new(UserRegisteredV2 {
        user_id: "u1".into(),
        email: "u1@example.test".into(),
    })
    .with_schema_version(2);
    bus.publisher.publish(&newer).await?;

    let (user_id, version) = tokio::time::timeout(WAIT, rx.recv()).await?.unwrap();
    assert_eq!((user_id.as_str(), version), ("u1", 2));
    wait_until(WAIT, || drained(&bus.js, DURABLE)).await?;
    assert_eq!(stream_messages(&bus.js, "SHOP_DLQ").await, 0);
    stop.send(()).ok();
    task.await??;
    Ok(())
}

#[tokio::test]
async fn poison_message_is_dead_lettered_and_the_consumer_keeps_going() -> Result<()> {
    let bus = bus().await?;
    let attempts = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let (a, h) = (Arc::clone(&attempts), Arc::clone(&handled));
    let handlers = Handlers::new().on(move |d: Delivery<UserRegistered>| {
        let (a, h) = (Arc::clone(&a), Arc::clone(&h));
        async move {
            match d.event.user_id.as_str() {
                "poison" => {
                    a.fetch_add(1, Ordering::SeqCst);
                    Err(HandlerError::transient("payment processor on fire"))
                }
                "invalid" => Err(HandlerError::permanent("user id is not a uuid")),
                _ => {
                    h.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        }
    });
    let metrics = shop_events::ConsumerMetrics::default();
    let (stop, task) = spawn_runner(
        ConsumerRunner::new(bus.js.clone(), fast_spec(), handlers).with_metrics(metrics.clone()),
    );
    let poison = user("poison");
    bus.publisher.publish(&poison).await?;
    bus.publisher.publish(&user("invalid")).await?;
    bus.publisher.publish(&user("fine")).await?;

    wait_until(WAIT, || async {
        stream_messages(&bus.js, "SHOP_DLQ").await == 2
    })
    .await?;
    wait_until(WAIT, || drained(&bus.js, DURABLE)).await?;
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "max_deliver attempts");
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "the good event after the poison one"
    );

    let dlq = bus.js.get_stream("SHOP_DLQ").await?;
    let mut seen = Vec::new();
    for seq in 1..=2 {
        let letter = dlq.get_raw_message(seq).await?;
        let header = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned());
        seen.push((
            header(HEADER_DLQ_EVENT_ID),
            header(HEADER_DLQ_ERROR).unwrap_or_default(),
            header(HEADER_DLQ_DELIVERIES),
            letter.subject.to_string(),
        ));
    }
    let transient = seen
        .iter()
        .find(|s| s.0.as_deref() == Some(poison.id.to_string().as_str()))
        .unwrap();
    assert!(
        transient.1.contains("payment processor on fire"),
        "{transient:?}"
    );
    assert_eq!(transient.2.as_deref(), Some("3"));
    assert_eq!(
        transient.3,
        format!("shop.dlq.{DURABLE}.shop.test.v1.user_registered")
    );
    let permanent = seen.iter().find(|s| s.1.contains("not a uuid")).unwrap();
    assert_eq!(
        permanent.2.as_deref(),
        Some("1"),
        "permanent errors are not retried"
    );

    // What the metrics say: three deliveries of the poison (two of them redeliveries, two
    // retries), two dead letters, one event handled.
    assert_eq!(metrics.redeliveries(DURABLE), 2);
    assert_eq!(metrics.handled(DURABLE, "retry"), 2);
    assert_eq!(metrics.handled(DURABLE, "dead_letter"), 2);
    assert_eq!(metrics.dead_letters(DURABLE), 2);
    assert_eq!(metrics.handled(DURABLE, "ack"), 1);

    // Still consuming after the poison.
    bus.publisher.publish(&user("later")).await?;
    wait_until(WAIT, || async { handled.load(Ordering::SeqCst) == 2 }).await?;
    wait_until(WAIT, || async { metrics.handled(DURABLE, "ack") == 2 }).await?;
    // Read from JetStream as the runner pulls: it falls to zero once all was delivered.
    wait_until(WAIT, || async { metrics.pending(DURABLE) == 0 }).await?;
    stop.send(()).ok();
    task.await??;
    Ok(())
}

async fn welcome_db() -> Result<(Postgres, PgPool)> {
    let pg = Postgres::start().await?;
    let pool = PgPool::connect(&pg.fresh_database().await?).await?;
    inbox::migrate(&pool).await?;
    // Run twice: the migration is idempotent.
    inbox::migrate(&pool).await?;
    // No unique key on purpose: a second effect would show as a second row.
    sqlx::query("CREATE TABLE welcome (user_id text NOT NULL)")
        .execute(&pool)
        .await?;
    Ok((pg, pool))
}

/// The effect and the inbox claim in one transaction. Returns whether it was applied.
async fn send_welcome(pool: &PgPool, d: &Delivery<UserRegistered>) -> Result<bool, HandlerError> {
    let mut tx = pool.begin().await?;
    if !Inbox::new(DURABLE).claim(&mut tx, d.meta.id).await? {
        return Ok(false);
    }
    sqlx::query("INSERT INTO welcome (user_id) VALUES ($1)")
        .bind(&d.event.user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

#[tokio::test]
async fn crash_after_effect_before_ack_is_acked_without_second_effect() -> Result<()> {
    let bus = bus().await?;
    let (_pg, pool) = welcome_db().await?;

    // First process: applies the effect, then hangs before the runner can ack; we kill it.
    let (applied_tx, mut applied_rx) = mpsc::unbounded_channel();
    let crashing = {
        let pool = pool.clone();
        Handlers::new().on(move |d: Delivery<UserRegistered>| {
            let (pool, applied_tx) = (pool.clone(), applied_tx.clone());
            async move {
                send_welcome(&pool, &d).await?;
                applied_tx.send(()).unwrap();
                std::future::pending::<()>().await;
                Ok(())
            }
        })
    };
    let first_js = shop_events::connect(&bus.nats.url(), "first").await?;
    let (_stop, first) = spawn_runner(ConsumerRunner::new(first_js, fast_spec(), crashing));
    let event = user("u1");
    bus.publisher.publish(&event).await?;
    tokio::time::timeout(WAIT, applied_rx.recv())
        .await?
        .unwrap();
    first.abort();
    let _ = first.await;

    // Second process: same durable consumer; the redelivery finds the inbox row.
    let skipped = Arc::new(AtomicUsize::new(0));
    let handlers = {
        let (pool, skipped) = (pool.clone(), Arc::clone(&skipped));
        Handlers::new().on(move |d: Delivery<UserRegistered>| {
            let (pool, skipped) = (pool.clone(), Arc::clone(&skipped));
            async move {
                if !send_welcome(&pool, &d).await? {
                    assert!(d.meta.delivered >= 2, "a redelivery");
                    skipped.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        })
    };
    let (stop, second) = spawn_runner(ConsumerRunner::new(bus.js.clone(), fast_spec(), handlers));
    wait_until(WAIT, || async { skipped.load(Ordering::SeqCst) >= 1 }).await?;
    wait_until(WAIT, || drained(&bus.js, DURABLE)).await?;

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM welcome")
        .fetch_one(&pool)
        .await?;
    assert_eq!(rows, 1, "exactly one effect");
    assert!(Inbox::new(DURABLE).contains(&pool, event.id).await?);
    assert_eq!(stream_messages(&bus.js, "SHOP_DLQ").await, 0);
    stop.send(()).ok();
    second.await??;
    Ok(())
}
