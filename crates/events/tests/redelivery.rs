//! Redelivery and dead-lettering against a real nats-server: what counts as a failure, and
//! that nothing is lost while the dead-letter stream is unavailable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use async_nats::jetstream;
use futures::TryStreamExt;
use shop_events::failures::FAILURES_BUCKET;
use shop_events::runner::{
    HEADER_DLQ_DELIVERIES, HEADER_DLQ_ERROR, HEADER_DLQ_EVENT_ID, HEADER_DLQ_FAILURES,
};
use shop_events::{
    ConsumerRunner, ConsumerSpec, Delivery, EventEnvelope, EventPublisher, EventsError,
    HandlerError, Handlers, StreamSpec,
};
use shop_testkit::{Nats, wait_until};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);
const DURABLE: &str = "notifications-welcome";

#[derive(Clone, PartialEq, prost::Message)]
struct UserRegistered {
    #[prost(string, tag = "1")]
    user_id: String,
}

impl prost::Name for UserRegistered {
    const NAME: &'static str = "UserRegistered";
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

/// Three failed attempts, quick retries, and an ack wait short enough to matter in a test.
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

async fn consumer_info(js: &jetstream::Context) -> Option<jetstream::consumer::Info> {
    js.get_stream("SHOP_TEST")
        .await
        .ok()?
        .consumer_info(DURABLE)
        .await
        .ok()
}

/// True once the consumer has nothing pending or unacked.
async fn drained(js: &jetstream::Context) -> bool {
    consumer_info(js)
        .await
        .is_some_and(|i| i.num_pending == 0 && i.num_ack_pending == 0)
}

/// Deliveries the server has made on the consumer so far, redeliveries included.
async fn deliveries(js: &jetstream::Context) -> u64 {
    consumer_info(js)
        .await
        .map_or(0, |i| i.delivered.consumer_sequence)
}

async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(stream) => stream.get_info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}

/// Keys of the runner's failure records (none once every message is settled).
async fn failure_records(js: &jetstream::Context) -> Result<Vec<String>> {
    let bucket = js.get_key_value(FAILURES_BUCKET).await?;
    Ok(bucket.keys().await?.try_collect().await?)
}

async fn dead_letter_headers(js: &jetstream::Context, seq: u64) -> Result<async_nats::HeaderMap> {
    let letter = js
        .get_stream("SHOP_DLQ")
        .await?
        .get_raw_message(seq)
        .await?;
    Ok(letter.headers)
}

fn header(headers: &async_nats::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.as_str().to_owned())
}

fn user(id: &str) -> EventEnvelope<UserRegistered> {
    EventEnvelope::new(UserRegistered { user_id: id.into() })
}

fn always_failing(attempts: &Arc<AtomicUsize>) -> Handlers {
    let attempts = Arc::clone(attempts);
    Handlers::new().on(move |_: Delivery<UserRegistered>| {
        let attempts = Arc::clone(&attempts);
        async move {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err(HandlerError::transient("payment processor on fire"))
        }
    })
}

#[tokio::test]
async fn poison_message_waits_for_the_dead_letter_stream_to_come_back() -> Result<()> {
    let bus = bus().await?;
    bus.js.delete_stream("SHOP_DLQ").await?;
    let attempts = Arc::new(AtomicUsize::new(0));
    let runner = ConsumerRunner::new(bus.js.clone(), fast_spec(), always_failing(&attempts));
    let (stop, task) = spawn_runner(runner);
    let poison = user("poison");
    bus.publisher.publish(&poison).await?;

    // Three failed attempts, then moves to a missing stream: the message must keep coming back
    // (today's code stops after one delivery past the limit and the event is stuck for good).
    wait_until(WAIT, || async { deliveries(&bus.js).await >= 6 }).await?;
    assert_eq!(stream_messages(&bus.js, "SHOP_DLQ").await, 0);

    StreamSpec::dead_letter().ensure(&bus.js).await?;
    wait_until(WAIT, || async {
        stream_messages(&bus.js, "SHOP_DLQ").await == 1
    })
    .await?;
    wait_until(WAIT, || drained(&bus.js)).await?;
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "the handler is not run again once it has given up"
    );
    let letter = dead_letter_headers(&bus.js, 1).await?;
    assert_eq!(
        header(&letter, HEADER_DLQ_EVENT_ID),
        Some(poison.id.to_string())
    );
    assert_eq!(header(&letter, HEADER_DLQ_FAILURES).as_deref(), Some("3"));
    let error = header(&letter, HEADER_DLQ_ERROR).unwrap_or_default();
    assert!(error.contains("payment processor on fire"), "{error}");
    assert_eq!(failure_records(&bus.js).await?, Vec::<String>::new());
    stop.send(()).ok();
    task.await??;
    Ok(())
}

#[tokio::test]
async fn slow_healthy_handlers_are_neither_redelivered_nor_dead_lettered() -> Result<()> {
    let bus = bus().await?;
    // With a 1 s ack wait: one handler that alone takes 2.5 ack waits, then twelve that take
    // three ack waits together. Published before the runner starts, so its first pull could
    // take all of them.
    let mut ids = vec!["long".to_owned()];
    ids.extend((0..12).map(|i| format!("u{i}")));
    for id in &ids {
        bus.publisher.publish(&user(id)).await?;
    }
    let seen: Arc<Mutex<HashMap<String, Vec<i64>>>> = Arc::default();
    let record = Arc::clone(&seen);
    let handlers = Handlers::new().on(move |d: Delivery<UserRegistered>| {
        let record = Arc::clone(&record);
        async move {
            let pause = if d.event.user_id == "long" { 2500 } else { 250 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            if let Ok(mut seen) = record.lock() {
                let deliveries = seen.entry(d.event.user_id).or_default();
                deliveries.push(d.meta.delivered);
            }
            Ok(())
        }
    });
    let (stop, task) = spawn_runner(ConsumerRunner::new(bus.js.clone(), fast_spec(), handlers));

    let all_seen = || async {
        seen.lock()
            .is_ok_and(|s| ids.iter().all(|id| s.contains_key(id)))
    };
    wait_until(WAIT, all_seen).await?;
    wait_until(WAIT, || drained(&bus.js)).await?;
    // Counted by the server: a redelivery of a healthy event (it sat in a buffer, or ran past
    // the ack wait) would show as an extra delivery, whether or not a handler ran again.
    assert_eq!(
        deliveries(&bus.js).await,
        ids.len() as u64,
        "one delivery per event"
    );
    assert_eq!(stream_messages(&bus.js, "SHOP_DLQ").await, 0);
    assert_eq!(
        failure_records(&bus.js).await?,
        Vec::<String>::new(),
        "no failure counted"
    );
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    for id in &ids {
        assert_eq!(
            seen.get(id),
            Some(&vec![1]),
            "{id} handled once, on its first delivery"
        );
    }
    stop.send(()).ok();
    task.await??;
    Ok(())
}

#[tokio::test]
async fn failures_count_across_restarts_including_a_crash_in_the_handler() -> Result<()> {
    let bus = bus().await?;
    // First process: the first attempt fails, the second hangs in the handler and the process
    // is killed there.
    let (hung_tx, mut hung_rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let crashing = {
        let calls = Arc::clone(&calls);
        Handlers::new().on(move |_: Delivery<UserRegistered>| {
            let (calls, hung_tx) = (Arc::clone(&calls), hung_tx.clone());
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(HandlerError::transient("payment processor on fire"));
                }
                hung_tx.send(()).ok();
                std::future::pending::<()>().await;
                Ok(())
            }
        })
    };
    let first_js = shop_events::connect(&bus.nats.url(), "first").await?;
    let (_stop, first) = spawn_runner(ConsumerRunner::new(first_js, fast_spec(), crashing));
    let poison = user("poison");
    bus.publisher.publish(&poison).await?;
    tokio::time::timeout(WAIT, hung_rx.recv()).await?;
    first.abort();
    let _ = first.await;

    // Second process: one failed attempt, one that never settled, so its first failure is
    // the third and last (a count kept in memory would start again at zero).
    let attempts = Arc::new(AtomicUsize::new(0));
    let runner = ConsumerRunner::new(bus.js.clone(), fast_spec(), always_failing(&attempts));
    let (stop, second) = spawn_runner(runner);
    wait_until(WAIT, || async {
        stream_messages(&bus.js, "SHOP_DLQ").await == 1
    })
    .await?;
    wait_until(WAIT, || drained(&bus.js)).await?;
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    let letter = dead_letter_headers(&bus.js, 1).await?;
    assert_eq!(header(&letter, HEADER_DLQ_FAILURES).as_deref(), Some("3"));
    assert_eq!(header(&letter, HEADER_DLQ_DELIVERIES).as_deref(), Some("3"));
    stop.send(()).ok();
    second.await??;
    Ok(())
}
