//! shop-outbox against real PostgreSQL and nats-server processes: crashes of the server and of
//! relays lose nothing and apply nothing twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use async_nats::jetstream;
use shop_events::{
    ConsumerRunner, ConsumerSpec, Delivery, EventEnvelope, EventPublisher, EventsError,
    HandlerError, Handlers, Inbox, StreamSpec, inbox,
};
use shop_outbox::{OutboxError, Relay, RelayConfig};
use shop_testkit::{Nats, Postgres, wait_until};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(60);
const DURABLE: &str = "notifications-welcome";

#[derive(Clone, PartialEq, prost::Message)]
struct UserRegistered {
    #[prost(string, tag = "1")]
    user_id: String,
}

impl prost::Name for UserRegistered {
    const NAME: &'static str = "UserRegistered";
    const PACKAGE: &'static str = "shop.identity.v1";
}

/// A registration: the user row and its event in one transaction.
async fn register(pool: &PgPool, user_id: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO users (id) VALUES ($1)")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let event = EventEnvelope::new(UserRegistered {
        user_id: user_id.to_owned(),
    });
    shop_outbox::add(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(())
}

struct World {
    _pg: Postgres,
    nats: Nats,
    pool: PgPool,
    js: jetstream::Context,
    stops: Vec<oneshot::Sender<()>>,
}

impl World {
    async fn start() -> Result<Self> {
        let pg = Postgres::start().await?;
        let pool = PgPool::connect(&pg.fresh_database().await?).await?;
        shop_outbox::migrate(&pool).await?;
        inbox::migrate(&pool).await?;
        sqlx::raw_sql(
            "CREATE TABLE users (id text PRIMARY KEY);
             CREATE TABLE welcome (user_id text NOT NULL); -- no key: a double shows",
        )
        .execute(&pool)
        .await?;
        let nats = Nats::start().await?;
        let js = shop_events::connect(&nats.url(), "outbox-test").await?;
        StreamSpec::for_context("identity").ensure(&js).await?;
        StreamSpec::dead_letter().ensure(&js).await?;
        Ok(Self {
            _pg: pg,
            nats,
            pool,
            js,
            stops: Vec::new(),
        })
    }

    fn relay(&self, batch_size: i64) -> Relay {
        Relay::new(self.pool.clone(), EventPublisher::new(self.js.clone())).with_config(
            RelayConfig {
                batch_size,
                poll_interval: Duration::from_millis(200),
                min_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                ..RelayConfig::default()
            },
        )
    }

    fn spawn_relay(&mut self, relay: Relay) -> JoinHandle<Result<(), OutboxError>> {
        let (stop, stopped) = oneshot::channel::<()>();
        self.stops.push(stop);
        tokio::spawn(async move {
            relay
                .run(async {
                    let _ = stopped.await;
                })
                .await
        })
    }

    /// The notifications side: applies each event once through the inbox.
    fn spawn_consumer(&mut self) -> JoinHandle<Result<(), EventsError>> {
        let pool = self.pool.clone();
        let handlers = Handlers::new().on(move |d: Delivery<UserRegistered>| {
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await?;
                if Inbox::new(DURABLE).claim(&mut tx, d.meta.id).await? {
                    sqlx::query("INSERT INTO welcome (user_id) VALUES ($1)")
                        .bind(&d.event.user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await.map_err(HandlerError::from)
            }
        });
        let spec = ConsumerSpec::new("SHOP_IDENTITY", DURABLE)
            .with_backoff(vec![Duration::from_millis(50)])
            .with_ack_wait(Duration::from_secs(2));
        let runner = ConsumerRunner::new(self.js.clone(), spec, handlers).with_concurrency(4);
        let (stop, stopped) = oneshot::channel::<()>();
        self.stops.push(stop);
        tokio::spawn(async move {
            runner
                .run(async {
                    let _ = stopped.await;
                })
                .await
        })
    }

    async fn register(&self, user_id: &str) -> Result<()> {
        register(&self.pool, user_id).await
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or(-1)
    }

    async fn stream_messages(&self) -> u64 {
        match self.js.get_stream("SHOP_IDENTITY").await {
            Ok(s) => s.get_info().await.map_or(0, |i| i.state.messages),
            Err(_) => 0,
        }
    }

    /// Every user welcomed exactly once, nothing left in the outbox.
    async fn assert_exactly_once(&self, users: i64) -> Result<()> {
        wait_until(WAIT, || async {
            self.count("SELECT count(*) FROM welcome").await >= users
        })
        .await?;
        let lag = shop_outbox::lag(&self.pool).await?;
        assert_eq!(lag.unpublished, 0);
        let (welcomes, distinct) = (
            self.count("SELECT count(*) FROM welcome").await,
            self.count("SELECT count(DISTINCT user_id) FROM welcome")
                .await,
        );
        assert_eq!((welcomes, distinct), (users, users), "one welcome per user");
        assert_eq!(
            self.count("SELECT count(*) FROM users u JOIN welcome w ON w.user_id = u.id")
                .await,
            users
        );
        Ok(())
    }

    fn stop(&mut self) {
        for stop in self.stops.drain(..) {
            stop.send(()).ok();
        }
    }
}

#[tokio::test]
async fn kill9_nats_while_registering_loses_and_doubles_nothing() -> Result<()> {
    let mut world = World::start().await?;
    assert!(
        world.nats.syncs_always(),
        "durability needs a nats-server with sync_interval: always, got {}",
        world.nats.version()
    );
    let relay = world.relay(50);
    world.spawn_relay(relay);
    world.spawn_consumer();

    // Registrations keep coming, one transaction each, until told to stop.
    let registered = Arc::new(AtomicUsize::new(0));
    let stop_producing = Arc::new(AtomicBool::new(false));
    let producer = {
        let (pool, registered) = (world.pool.clone(), Arc::clone(&registered));
        let stop = Arc::clone(&stop_producing);
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = registered.load(Ordering::SeqCst);
                register(&pool, &format!("user-{n}")).await.unwrap();
                registered.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let registered_at_least = |n: usize| {
        let registered = Arc::clone(&registered);
        move || {
            let registered = Arc::clone(&registered);
            async move { registered.load(Ordering::SeqCst) >= n }
        }
    };

    // Crash the server once events are flowing; keep registering while it is down.
    wait_until(WAIT, || async {
        world.count("SELECT count(*) FROM welcome").await >= 50
    })
    .await?;
    world.nats.kill9().await?;
    let at_kill = registered.load(Ordering::SeqCst);
    wait_until(WAIT, registered_at_least(at_kill + 200)).await?;
    let backlog = shop_outbox::lag(&world.pool).await?;
    assert!(
        backlog.unpublished > 0,
        "events piled up in the outbox while NATS was down"
    );
    world.nats.restart().await?;
    let at_restart = registered.load(Ordering::SeqCst);
    wait_until(WAIT, registered_at_least(at_restart + 200)).await?;
    stop_producing.store(true, Ordering::SeqCst);
    producer.await?;
    let users = i64::try_from(registered.load(Ordering::SeqCst))?;
    println!(
        "nats-server {}: {users} registrations, {} while it was down, backlog {backlog:?}",
        world.nats.version(),
        at_restart - at_kill
    );

    world.assert_exactly_once(users).await?;
    // JetStream itself holds each event once: relay retries were deduplicated.
    assert_eq!(world.stream_messages().await, u64::try_from(users)?);
    world.stop();
    Ok(())
}

#[tokio::test]
async fn relay_killed_mid_batch_then_two_relays_publish_each_event_once() -> Result<()> {
    let mut world = World::start().await?;
    const USERS: i64 = 2000;
    for i in 0..USERS {
        world.register(&format!("user-{i}")).await?;
    }

    // One relay takes everything in one batch; kill it once JetStream holds part of the batch.
    let doomed = world.relay(USERS);
    let doomed = tokio::spawn(async move { doomed.relay_batch().await });
    loop {
        if world.stream_messages().await > 0 || doomed.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    doomed.abort();
    let outcome = doomed.await;
    let in_stream = world.stream_messages().await;
    let lag = shop_outbox::lag(&world.pool).await?;
    assert!(outcome.is_err(), "the relay was killed before it finished");
    assert!(in_stream > 0, "part of the batch reached JetStream");
    assert_eq!(
        lag.unpublished, USERS,
        "nothing was marked: the batch rolled back"
    );

    // Two relays at once, small batches, while the consumer applies.
    let (first, second) = (world.relay(100), world.relay(100));
    world.spawn_relay(first);
    world.spawn_relay(second);
    world.spawn_consumer();
    world.assert_exactly_once(USERS).await?;
    assert_eq!(
        world.stream_messages().await,
        USERS as u64,
        "republished ids deduplicated"
    );
    world.stop();
    Ok(())
}

#[tokio::test]
async fn lag_cleanup_and_republish() -> Result<()> {
    let world = World::start().await?;
    for i in 0..3 {
        world.register(&format!("user-{i}")).await?;
    }
    let lag = shop_outbox::lag(&world.pool).await?;
    assert_eq!(lag.unpublished, 3);
    let relay = world.relay(10);
    assert_eq!(relay.relay_batch().await?, 3);
    assert_eq!(relay.relay_batch().await?, 0);
    let lag = shop_outbox::lag(&world.pool).await?;
    assert_eq!((lag.unpublished, lag.oldest_age), (0, Duration::ZERO));

    // Republish by event id: queued again, and JetStream drops the duplicate.
    let event_id: uuid::Uuid =
        sqlx::query_scalar("SELECT event_id FROM outbox ORDER BY id LIMIT 1")
            .fetch_one(&world.pool)
            .await?;
    assert!(shop_outbox::republish(&world.pool, event_id).await?);
    assert_eq!(shop_outbox::lag(&world.pool).await?.unpublished, 1);
    assert_eq!(relay.relay_batch().await?, 1);
    assert_eq!(world.stream_messages().await, 3);

    // Retention: keep recent rows, drop old published ones.
    assert_eq!(
        shop_outbox::purge_published(&world.pool, Duration::from_secs(3600), 100).await?,
        0
    );
    assert_eq!(
        shop_outbox::purge_published(&world.pool, Duration::ZERO, 100).await?,
        3
    );
    assert_eq!(world.count("SELECT count(*) FROM outbox").await, 0);
    Ok(())
}

#[tokio::test]
async fn relay_reports_nats_down_without_claiming() -> Result<()> {
    let mut world = World::start().await?;
    world.register("user-1").await?;
    world.nats.kill9().await?;
    let relay = world.relay(10);
    // The client notices the dead connection asynchronously: poll until the relay refuses.
    wait_until(WAIT, || async {
        matches!(
            relay.relay_batch().await,
            Err(shop_outbox::OutboxError::NatsDisconnected)
        )
    })
    .await?;
    assert_eq!(shop_outbox::lag(&world.pool).await?.unpublished, 1);
    world.nats.restart().await?;
    wait_until(WAIT, || async {
        relay.relay_batch().await.is_ok_and(|n| n == 1)
    })
    .await?;
    Ok(())
}
