//! shop-outbox against real PostgreSQL and nats-server processes: crashes of the server and of
//! relays lose nothing and apply nothing twice; a row the server refuses is parked without
//! holding back the others, and an outage parks nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use async_nats::jetstream;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use shop_events::{
    ConsumerRunner, ConsumerSpec, Delivery, EventEnvelope, EventPublisher, EventsError,
    HandlerError, Handlers, Inbox, StreamSpec, inbox,
};
use shop_outbox::{OutboxError, Relay, RelayConfig, RelayMetrics};
use shop_testkit::fault_proxy::{Fault, FaultProxy};
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

/// Writes an event of its own (not a registration) through the outbox.
async fn add_event(pool: &PgPool, event: &EventEnvelope<UserRegistered>) -> Result<()> {
    let mut tx = pool.begin().await?;
    shop_outbox::add(&mut tx, event).await?;
    tx.commit().await?;
    Ok(())
}

/// A relay that parks a row after `park_after` refusals, retrying refused rows quickly.
fn parking_relay(pool: &PgPool, js: jetstream::Context, park_after: u32) -> Relay {
    Relay::new(pool.clone(), EventPublisher::new(js)).with_config(RelayConfig {
        batch_size: 10,
        poll_interval: Duration::from_millis(100),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        park_after,
        retry_delay: Duration::from_millis(50),
        metrics_interval: Duration::from_millis(100),
        ..RelayConfig::default()
    })
}

#[tokio::test]
async fn an_oversize_event_does_not_hold_back_the_events_after_it() -> Result<()> {
    let mut world = World::start().await?;
    world.register("user-0").await?;
    // 2 MiB: over nats-server's default max_payload (1 MiB); the server would refuse it.
    let oversize = EventEnvelope::new(UserRegistered {
        user_id: "x".repeat(2 << 20),
    });
    add_event(&world.pool, &oversize).await?;
    for i in 1..4 {
        world.register(&format!("user-{i}")).await?;
    }
    let metrics = RelayMetrics::default();
    let relay = parking_relay(&world.pool, world.js.clone(), 3).with_metrics(metrics.clone());
    world.spawn_relay(relay);
    world.spawn_consumer();
    wait_until(WAIT, || async {
        world.count("SELECT count(*) FROM welcome").await >= 4
    })
    .await?;

    // The oversize row is parked after its three attempts, with the reason.
    wait_until(WAIT, || async {
        shop_outbox::dead_letter_count(&world.pool).await.ok() == Some(1)
    })
    .await?;
    let parked = shop_outbox::dead_letters(&world.pool, 10).await?;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].event_id, oversize.id);
    assert_eq!(parked[0].attempts, 3);
    assert!(parked[0].error.contains("payload"), "{}", parked[0].error);
    assert_eq!(shop_outbox::lag(&world.pool).await?.unpublished, 0);
    assert_eq!(world.stream_messages().await, 4);

    // The service's /metrics shows it.
    wait_until(WAIT, || async { metrics.parked() == 1 }).await?;
    let mut registry = Registry::with_prefix("shop");
    metrics.register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry)?;
    assert!(text.contains("shop_outbox_parked 1"), "{text}");

    // Requeued, it is tried again (and parked again: the server still refuses it).
    assert!(shop_outbox::requeue_dead_letter(&world.pool, oversize.id).await?);
    assert!(!shop_outbox::requeue_dead_letter(&world.pool, oversize.id).await?);
    wait_until(WAIT, || async {
        shop_outbox::dead_letter_count(&world.pool).await.ok() == Some(1)
    })
    .await?;
    assert_eq!(world.count("SELECT count(*) FROM welcome").await, 4);
    world.stop();
    Ok(())
}

#[tokio::test]
async fn events_with_no_stream_or_an_invalid_subject_are_parked_with_their_reason() -> Result<()> {
    let mut world = World::start().await?;
    let mut nowhere = EventEnvelope::new(UserRegistered {
        user_id: "nowhere".into(),
    });
    nowhere.subject = "shop.nowhere.v1.user_registered".into();
    let mut invalid = EventEnvelope::new(UserRegistered {
        user_id: "invalid".into(),
    });
    invalid.subject = "shop.identity.v1.user registered".into();
    world.register("user-0").await?;
    add_event(&world.pool, &nowhere).await?;
    world.register("user-1").await?;
    add_event(&world.pool, &invalid).await?;
    world.register("user-2").await?;

    let relay = parking_relay(&world.pool, world.js.clone(), 2);
    world.spawn_relay(relay);
    world.spawn_consumer();
    wait_until(WAIT, || async {
        world.count("SELECT count(*) FROM welcome").await >= 3
    })
    .await?;
    wait_until(WAIT, || async {
        shop_outbox::dead_letter_count(&world.pool).await.ok() == Some(2)
    })
    .await?;
    let parked = shop_outbox::dead_letters(&world.pool, 10).await?;
    let reason = |id| {
        parked
            .iter()
            .find(|d| d.event_id == id)
            .map(|d| (d.attempts, d.error.clone()))
    };
    let (attempts, error) = reason(nowhere.id).unwrap_or_default();
    assert_eq!(attempts, 2);
    assert!(error.contains("no stream"), "{error}");
    let (attempts, error) = reason(invalid.id).unwrap_or_default();
    assert_eq!(attempts, 2);
    assert!(error.contains("subject"), "{error}");
    assert_eq!(shop_outbox::lag(&world.pool).await?.unpublished, 0);
    world.stop();
    Ok(())
}

#[tokio::test]
async fn a_nats_outage_never_parks_and_the_rows_go_out_once_it_is_back() -> Result<()> {
    let mut world = World::start().await?;
    // The relay reaches NATS through a fault proxy: a blackhole looks like a live connection
    // whose acks never come (timeouts), a killed server like a dropped one.
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], world.nats.port()));
    let proxy = FaultProxy::start(upstream).await?;
    let client = async_nats::ConnectOptions::new()
        .ping_interval(Duration::from_millis(500))
        .connect(format!("nats://{}", proxy.addr()))
        .await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(500))
        .build(client);
    // Parks at the first counted refusal: any outage counted would show.
    let relay = parking_relay(&world.pool, js, 1);
    world.spawn_consumer();
    world.register("user-0").await?;
    assert_eq!(relay.relay_batch().await?, 1);

    proxy.set(Fault::Blackhole);
    for i in 1..4 {
        world.register(&format!("user-{i}")).await?;
    }
    let first = relay.relay_batch().await;
    assert!(
        matches!(first, Err(OutboxError::Relay { published: 0, .. })),
        "rows were sent and their acks timed out: {first:?}"
    );
    for _ in 0..3 {
        assert!(relay.relay_batch().await.is_err());
    }
    world.nats.kill9().await?;
    for _ in 0..3 {
        assert!(relay.relay_batch().await.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counted = world
        .count("SELECT count(*) FROM outbox WHERE attempts > 0 OR last_error IS NOT NULL")
        .await;
    assert_eq!(counted, 0, "no outage attempt was counted");
    assert_eq!(shop_outbox::dead_letter_count(&world.pool).await?, 0);
    assert_eq!(shop_outbox::lag(&world.pool).await?.unpublished, 3);

    proxy.set(Fault::Pass);
    world.nats.restart().await?;
    wait_until(WAIT, || async {
        relay.relay_batch().await.is_ok()
            && shop_outbox::lag(&world.pool)
                .await
                .is_ok_and(|l| l.unpublished == 0)
    })
    .await?;
    world.assert_exactly_once(4).await?;
    assert_eq!(shop_outbox::dead_letter_count(&world.pool).await?, 0);
    world.stop();
    Ok(())
}
