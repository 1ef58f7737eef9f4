//! Outbox relay benchmark against real PostgreSQL and nats-server (`sync_interval: always`).
//!
//! Reports, in one run: raw JetStream publish rate (acks awaited, up to a batch in flight) as
//! the baseline, the relay's drain rate over the same number of events and the ratio; then
//! publish-to-consume latency p50/p99 at a moderate, paced load, for events going through the
//! outbox and relay and for events published directly.
//!
//! `cargo bench -p shop-outbox --bench relay` (env `BENCH_EVENTS`, `BENCH_RATE`, `BENCH_LATENCY_EVENTS`).
#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::future::join_all;
use shop_events::{
    ConsumerRunner, ConsumerSpec, Delivery, EventEnvelope, EventPublisher, Handlers, StreamSpec,
};
use shop_outbox::{Relay, RelayConfig};
use shop_testkit::{Nats, Postgres, wait_until};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use time::OffsetDateTime;

#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(uint64, tag = "1")]
    n: u64,
    #[prost(bytes = "vec", tag = "2")]
    pad: Vec<u8>,
}

impl prost::Name for Ping {
    const NAME: &'static str = "Ping";
    const PACKAGE: &'static str = "shop.bench.v1";
}

const RAW_SUBJECT: &str = "shop.bench.v1.raw_ping";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ping(n: u64) -> EventEnvelope<Ping> {
    EventEnvelope::new(Ping {
        n,
        pad: vec![7; 200],
    })
}

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<()> {
    let events = env("BENCH_EVENTS", 20_000);
    let rate = env("BENCH_RATE", 500);
    let latency_events = env("BENCH_LATENCY_EVENTS", 3_000);

    let pg = Postgres::start().await?;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect(&pg.fresh_database().await?)
        .await?;
    shop_outbox::migrate(&pool).await?;
    let nats = Nats::start().await?;
    let js = shop_events::connect(&nats.url(), "bench").await?;
    StreamSpec::for_context("bench").ensure(&js).await?;
    let publisher = EventPublisher::new(js.clone());
    println!(
        "nats-server {} (sync always: {}), PostgreSQL {}, {events} events of ~250 B",
        nats.version(),
        nats.syncs_always(),
        pg.version()
    );

    let raw = raw_publish_rate(&publisher, events).await?;
    let written = write_outbox(&pool, events).await?;
    let relayed = relay_drain_rate(&pool, &publisher, events).await?;
    println!("outbox writes (1 event/tx, NOTIFY) {written:>10.0} events/s");
    println!("raw JetStream publish (baseline)   {raw:>10.0} events/s");
    println!("outbox relay drain                 {relayed:>10.0} events/s");
    println!("relay / raw                        {:>10.2}", relayed / raw);

    let (p50, p99) = outbox_latency(&pool, &js, events, latency_events, rate).await?;
    println!("outbox -> consumer latency @ {rate}/s  p50 {p50:?}  p99 {p99:?}");
    let (p50, p99) = raw_latency(&publisher, &js, events, latency_events, rate).await?;
    println!("direct -> consumer latency @ {rate}/s  p50 {p50:?}  p99 {p99:?}");
    Ok(())
}

/// Baseline: publish with acks, 500 in flight at a time (the relay's batch size).
async fn raw_publish_rate(publisher: &EventPublisher, events: u64) -> Result<f64> {
    let encoded: Vec<_> = (0..events)
        .map(|n| ping(n).with_subject(RAW_SUBJECT).encode())
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    for chunk in encoded.chunks(500) {
        let mut acks = Vec::with_capacity(chunk.len());
        for event in chunk {
            acks.push(publisher.send(event).await?);
        }
        for ack in join_all(acks.into_iter().map(|a| a.ack())).await {
            ack?;
        }
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn write_outbox(pool: &PgPool, events: u64) -> Result<f64> {
    let started = Instant::now();
    let writers = (0..8).map(|w| {
        let pool = pool.clone();
        async move {
            for n in (w..events).step_by(8) {
                let mut tx = pool.begin().await?;
                shop_outbox::add(&mut tx, &ping(n)).await?;
                tx.commit().await?;
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    for result in join_all(writers).await {
        result?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn relay_drain_rate(pool: &PgPool, publisher: &EventPublisher, events: u64) -> Result<f64> {
    let relay = Relay::new(pool.clone(), publisher.clone());
    let started = Instant::now();
    let mut published = 0;
    while published < events {
        published += relay.relay_batch().await? as u64;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

type Latencies = Arc<Mutex<Vec<Duration>>>;

fn count(latencies: &Latencies) -> u64 {
    latencies.lock().map_or(0, |l| l.len() as u64)
}

fn recording_consumer(
    js: &async_nats::jetstream::Context,
    durable: &str,
    subject: &str,
) -> (Latencies, tokio::sync::oneshot::Sender<()>) {
    let latencies: Latencies = Arc::default();
    let record = Arc::clone(&latencies);
    let handlers = Handlers::new().on(move |d: Delivery<Ping>| {
        let record = Arc::clone(&record);
        async move {
            let age = OffsetDateTime::now_utc() - d.meta.occurred_at;
            if let Ok(mut l) = record.lock() {
                l.push(age.try_into().unwrap_or_default());
            }
            Ok(())
        }
    });
    let spec =
        ConsumerSpec::new("SHOP_BENCH", durable).with_filter_subjects(vec![subject.to_owned()]);
    let runner = ConsumerRunner::new(js.clone(), spec, handlers);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    (latencies, stop)
}

async fn outbox_latency(
    pool: &PgPool,
    js: &async_nats::jetstream::Context,
    backlog: u64,
    events: u64,
    rate: u64,
) -> Result<(Duration, Duration)> {
    let (latencies, stop_consumer) = recording_consumer(js, "bench-outbox", "shop.bench.v1.ping");
    let relay =
        Relay::new(pool.clone(), EventPublisher::new(js.clone())).with_config(RelayConfig {
            retention: None,
            ..RelayConfig::default()
        });
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(relay.run(async {
        let _ = relay_stopped.await;
    }));
    wait_until(Duration::from_secs(120), || async {
        count(&latencies) >= backlog
    })
    .await?;
    latencies.lock().map(|mut l| l.clear()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    for n in 0..events {
        tick.tick().await;
        let mut tx = pool.begin().await?;
        shop_outbox::add(&mut tx, &ping(n)).await?;
        tx.commit().await?;
    }
    let result = percentiles(&latencies, events).await;
    stop_relay.send(()).ok();
    stop_consumer.send(()).ok();
    result
}

async fn raw_latency(
    publisher: &EventPublisher,
    js: &async_nats::jetstream::Context,
    backlog: u64,
    events: u64,
    rate: u64,
) -> Result<(Duration, Duration)> {
    // The rate phases' events (`backlog`) are consumed first; only the paced ones count.
    let (latencies, stop_consumer) = recording_consumer(js, "bench-direct", RAW_SUBJECT);
    wait_until(Duration::from_secs(120), || async {
        count(&latencies) >= backlog
    })
    .await?;
    latencies.lock().map(|mut l| l.clear()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    for n in 0..events {
        tick.tick().await;
        publisher
            .publish(&ping(n).with_subject(RAW_SUBJECT))
            .await?;
    }
    let result = percentiles(&latencies, events).await;
    stop_consumer.send(()).ok();
    result
}

async fn percentiles(latencies: &Latencies, events: u64) -> Result<(Duration, Duration)> {
    wait_until(Duration::from_secs(120), || async {
        count(latencies) >= events
    })
    .await?;
    let mut all = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    if std::env::var_os("BENCH_DEBUG").is_some() {
        let slow: Vec<_> = all
            .iter()
            .enumerate()
            .filter(|(_, d)| **d > Duration::from_millis(10))
            .map(|(i, d)| (i, d.as_millis()))
            .collect();
        println!("slow (index, ms): {slow:?}");
    }
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Ok((at(0.50), at(0.99)))
}
