//! Bare tonic unary calls vs. the same calls through the full resilience client + server stack,
//! measured in the same run. Not part of CI.
//!
//! Two stack configurations are measured against the same bare baseline:
//! - `stack direct`: one static endpoint, which `client::connect` sends straight to that
//!   endpoint's channel (nothing to balance or eject);
//! - `stack p2c`: two static endpoints (two protected servers in this process), through the p2c
//!   balancer with per-endpoint ejection, as a DNS name with several addresses gets.
//!
//! `cargo bench -p shop-resilience --bench stack -- [seconds-per-round]`
#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shop_resilience::balance::Endpoints;
use shop_resilience::client::{self, DependencyConfig};
use shop_resilience::rate_limit::RateLimitConfig;
use shop_resilience::server::{ServerConfig, ServerLayer};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

type Client<T> = HealthClient<T>;

#[derive(Debug, Default)]
struct Run {
    calls: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn throughput(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }
    fn merge(&mut self, other: Run) {
        self.calls += other.calls;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }
}

async fn serve_bare() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    Ok(addr)
}

async fn serve_protected() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let config = ServerConfig {
        max_concurrent: 1024,
        rate_limit: Some(RateLimitConfig {
            per_second: NonZeroU32::MAX,
            burst: NonZeroU32::MAX,
            ..RateLimitConfig::default()
        }),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(ServerLayer::new(&config))
            .add_service(health)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    Ok(addr)
}

/// `concurrency` workers call `Check` back to back for `duration`.
async fn measure<T>(
    client: &Client<T>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Run>
where
    Client<T>: Clone + Send + 'static,
    T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
    T::Future: Send,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while start.elapsed() < duration {
                    let begin = Instant::now();
                    client.check(HealthCheckRequest::default()).await?;
                    latencies.push(begin.elapsed());
                }
                Ok::<_, tonic::Status>(latencies)
            })
        })
        .collect();
    let mut run = Run::default();
    for worker in workers {
        run.latencies.extend(worker.await??);
    }
    run.elapsed = start.elapsed();
    run.calls = run.latencies.len();
    Ok(run)
}

fn report(label: &str, bare: &mut Run, name: &str, stack: &mut Run) {
    let (b50, b99) = (bare.percentile(0.50), bare.percentile(0.99));
    let (s50, s99) = (stack.percentile(0.50), stack.percentile(0.99));
    println!(
        "{label:<16} bare {:>6.0} calls/s p50 {:>7.1?} p99 {:>7.1?} | {name:<12} {:>6.0} calls/s p50 \
         {:>7.1?} p99 {:>7.1?} | ratio {:.3} added p50 {:>+7.1} µs p99 {:>+7.1} µs",
        bare.throughput(),
        b50,
        b99,
        stack.throughput(),
        s50,
        s99,
        stack.throughput() / bare.throughput(),
        (s50.as_secs_f64() - b50.as_secs_f64()) * 1e6,
        (s99.as_secs_f64() - b99.as_secs_f64()) * 1e6,
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| a.parse().context("seconds per round"))
        .transpose()?
        .unwrap_or(3);
    let round = Duration::from_secs(seconds);

    let bare_addr = serve_bare().await?;
    let stack_addr = serve_protected().await?;
    let p2c_addrs = vec![serve_protected().await?, serve_protected().await?];
    let bare = HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{bare_addr}"))?
            .connect()
            .await?,
    );
    let mut config = DependencyConfig::new("bench", Endpoints::Static(vec![stack_addr]));
    config.retry.idempotent_methods = ["/grpc.health.v1.Health/*".to_owned()].into();
    config.caller = Some("bench".to_owned());
    let stack = HealthClient::new(client::connect(&config).await?);
    config.endpoints = Endpoints::Static(p2c_addrs);
    let p2c = HealthClient::new(client::connect(&config).await?);

    // Warm up every path (connections, allocator, caches).
    measure(&bare, 4, Duration::from_millis(500)).await?;
    measure(&stack, 4, Duration::from_millis(500)).await?;
    measure(&p2c, 4, Duration::from_millis(500)).await?;

    for concurrency in [1, 16, 64] {
        let mut bare_total = Run::default();
        let (mut stack_total, mut p2c_total) = (Run::default(), Run::default());
        // Interleave rounds so drift in machine load hits every side alike.
        for _ in 0..3 {
            bare_total.merge(measure(&bare, concurrency, round).await?);
            stack_total.merge(measure(&stack, concurrency, round).await?);
            p2c_total.merge(measure(&p2c, concurrency, round).await?);
        }
        let label = format!("concurrency {concurrency}");
        report(&label, &mut bare_total, "stack direct", &mut stack_total);
        report(&label, &mut bare_total, "stack p2c", &mut p2c_total);
    }
    Ok(())
}
