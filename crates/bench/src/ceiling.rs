//! The ceilings of this machine, measured on the mesh's own PostgreSQL and nats-server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Server, server::TcpIncoming};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Operations completed in a measured interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Operations that completed.
    pub ops: u64,
    /// How long they took, all together.
    pub elapsed: Duration,
}

impl Rate {
    /// Operations per second.
    #[must_use]
    pub fn per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            // Counts stay far below 2^52.
            #[allow(clippy::cast_precision_loss)]
            let ops = self.ops as f64;
            ops / secs
        } else {
            0.0
        }
    }
}

/// Runs `workers` copies of `op` until `duration` has passed; counts the successes.
async fn drive<F, Fut>(workers: usize, duration: Duration, op: F) -> anyhow::Result<Rate>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (op, done) = (op.clone(), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                op().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await.context("ceiling worker panicked")??;
    }
    Ok(Rate {
        ops: done.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}

/// Single-row INSERT commits/s from `connections` connections to the database server at
/// `server_url` (a `postgres://…/` URL without a database), in a `bench` database of its own.
pub async fn pg_commits(
    server_url: &str,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<Rate> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{server_url}postgres"))
        .await
        .context("connect to PostgreSQL")?;
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = 'bench'")
            .fetch_optional(&admin)
            .await?;
    if exists.is_none() {
        sqlx::query("CREATE DATABASE bench").execute(&admin).await?;
    }
    admin.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .min_connections(connections)
        .connect(&format!("{server_url}bench"))
        .await
        .context("connect to the bench database")?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS commit_ceiling \
         (id bigserial PRIMARY KEY, payload text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    let workers = usize::try_from(connections).unwrap_or(1);
    let insert = pool.clone();
    let rate = drive(workers, duration, move || {
        let pool = insert.clone();
        async move {
            sqlx::query("INSERT INTO commit_ceiling (payload) VALUES ($1)")
                .bind("order")
                .execute(&pool)
                .await?;
            Ok(())
        }
    })
    .await?;
    sqlx::query("DROP TABLE commit_ceiling")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(rate)
}

/// Bare unary gRPC calls/s: `grpc.health.v1.Health/Check` on a tonic server in this process,
/// from `concurrency` callers sharing `channels` connections. No layers, no deadline: the
/// transport alone.
pub async fn grpc_calls(
    channels: usize,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Rate> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = stopped.await;
                },
            )
            .await
    });
    let mut clients = Vec::with_capacity(channels);
    for _ in 0..channels.max(1) {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        clients.push(HealthClient::new(channel));
    }
    let clients = Arc::new(clients);
    let next = Arc::new(AtomicU64::new(0));
    let rate = drive(concurrency, duration, move || {
        let (clients, next) = (Arc::clone(&clients), Arc::clone(&next));
        async move {
            let index = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(0);
            let mut client = clients[index % clients.len()].clone();
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await?;
            Ok(())
        }
    })
    .await?;
    let _ = stop.send(());
    server.await.context("health server panicked")??;
    Ok(rate)
}

/// JetStream publishes/s, each awaited until the server acknowledged it (stored), from
/// `concurrency` publishers, into a stream of its own on the nats-server at `nats_url`.
pub async fn jetstream_publishes(
    nats_url: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Rate> {
    let client = async_nats::connect(nats_url)
        .await
        .context("connect to NATS")?;
    let js = async_nats::jetstream::new(client);
    let stream = "BENCH_PUBLISH_CEILING";
    let _ = js.delete_stream(stream).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec!["bench.publish_ceiling".to_owned()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    // About the size of an order event's envelope.
    let payload = bytes_of(300);
    let publisher = js.clone();
    let rate = drive(concurrency, duration, move || {
        let (js, payload) = (publisher.clone(), payload.clone());
        async move {
            js.publish("bench.publish_ceiling", payload).await?.await?;
            Ok(())
        }
    })
    .await?;
    js.delete_stream(stream).await?;
    Ok(rate)
}

fn bytes_of(len: usize) -> bytes::Bytes {
    bytes::Bytes::from(vec![b'x'; len])
}
