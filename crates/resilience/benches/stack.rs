//! Bare tonic unary calls vs. the same calls through the full resilience client + server stack,
//! measured in the same run. Not part of CI.
//!
//! ```text
//! cargo bench -p shop-resilience --bench stack -- [rounds] [seconds-per-round]
//! cargo bench -p shop-resilience --bench stack -- --calls N --client stack   # for callgrind
//! ```
//!
//! Six clients call `grpc.health.v1.Health/Check`, each against its own server(s):
//! - `bare`: a plain tonic `Channel` to a server without layers, no deadline (for reference);
//! - `bare+deadline`: the same with the stack's 2 s deadline set the tonic way
//!   (`Request::set_timeout`, enforced by tonic's channel and server). Every call in the mesh
//!   carries a deadline, so this is the same call without our layers: the baseline of
//!   `stack direct`;
//! - `bare p2c`: tonic's own p2c balancer (`Channel::balance_list`) over two plain servers,
//!   with the deadline: the baseline of `stack p2c` (two connections batch writes differently
//!   from one, so a two-endpoint stack is compared with a two-endpoint bare client);
//! - `stack direct`: `client::connect` with one static endpoint (straight to its channel) to a
//!   server behind `ServerLayer`;
//! - `stack p2c`: `client::connect` with two static endpoints (two protected servers), through
//!   our p2c balancer with ejection, the path every DNS dependency takes;
//! - `stack mTLS`: `stack direct` over mutual TLS (`shop_tls`: the listener and connector
//!   every service uses with `TLS_*` set, certificates from a throwaway CA), compared with
//!   `stack direct`: what TLS costs a call on an open connection.
//!
//! Method, so that drift in machine load hits every client alike: at concurrency 1, 16 and 64,
//! `rounds` rounds (default 10); in each round every client runs closed-loop (each worker calls
//! back to back) for `seconds` (default 1), in an order rotated per round. Every figure is the
//! median over rounds of a per-round comparison with the baseline (ratio of calls/s, difference
//! of p50 and p99), printed with its range across rounds.
//!
//! At concurrency 16 and 64 the CPU is saturated, and p99 there is mostly the queue in front of
//! it (≈ concurrency / throughput): it moves with the throughput ratio and with scheduling noise
//! more than with what a layer adds to one call. Concurrency 1 shows that cost directly.
//!
//! `--calls N --client <bare|bare+deadline|bare-p2c|stack|p2c|mtls>` makes N sequential calls and exits,
//! printing nothing: run it under `valgrind --tool=callgrind` for two values of N and divide the
//! difference in instructions by the difference in N for a per-call cost far steadier than
//! wall clock (about ±1 k instructions from run to run: the threads wake in varying order).
#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shop_resilience::balance::Endpoints;
use shop_resilience::client::{self, DependencyConfig, ResilientChannel};
use shop_resilience::rate_limit::RateLimitConfig;
use shop_resilience::server::{ServerConfig, ServerLayer};
use tokio::runtime::Handle;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The deadline of every call: the client stack's default timeout, set on bare calls too.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One of the measured clients.
#[derive(Clone)]
enum Client {
    Bare(HealthClient<Channel>),
    BareDeadline(HealthClient<Channel>),
    BareP2c(HealthClient<Channel>),
    Stack(HealthClient<ResilientChannel>),
}

#[derive(Debug, Default)]
struct Run {
    calls: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// The clients measured: name, client, and the index of the baseline it is compared with.
const N: usize = 6;
const BASE_DIRECT: usize = 1;
const BASE_P2C: usize = 2;
const STACK_DIRECT: usize = 3;

struct Clients {
    names: [&'static str; N],
    baselines: [usize; N],
    clients: [Client; N],
}

impl Client {
    async fn check(&mut self) -> Result<(), tonic::Status> {
        let request = HealthCheckRequest::default();
        match self {
            Self::Bare(client) => client.check(request).await.map(drop),
            Self::BareDeadline(client) | Self::BareP2c(client) => {
                let mut request = tonic::Request::new(request);
                request.set_timeout(TIMEOUT);
                client.check(request).await.map(drop)
            }
            Self::Stack(client) => client.check(request).await.map(drop),
        }
    }
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
}

/// Starts a health server on `servers` (the server runtime); returns its address.
fn serve(servers: &Handle, protected: bool) -> anyhow::Result<SocketAddr> {
    serve_with(servers, protected, None)
}

/// [`serve`], over mutual TLS with `tls` when given (always protected then).
fn serve_with(
    servers: &Handle,
    protected: bool,
    tls: Option<shop_tls::MeshTls>,
) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
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
    servers.spawn(async move {
        // Registered with the server runtime's reactor: made inside one of its tasks.
        let listener = tokio::net::TcpListener::from_std(listener)?;
        if let Some(tls) = tls {
            let mut server = tonic::transport::Server::builder().layer(ServerLayer::new(&config));
            server
                .add_service(health)
                .serve_with_incoming(shop_tls::incoming(listener, Some(tls)))
                .await?;
            return anyhow::Ok(());
        }
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        if protected {
            let mut server = tonic::transport::Server::builder().layer(ServerLayer::new(&config));
            server
                .add_service(health)
                .serve_with_incoming(incoming)
                .await?;
        } else {
            let mut server = tonic::transport::Server::builder();
            server
                .add_service(health)
                .serve_with_incoming(incoming)
                .await?;
        }
        anyhow::Ok(())
    });
    Ok(addr)
}

/// Certificates for the mTLS pair, in a temp dir that lives as long as the process.
fn mtls_pair() -> anyhow::Result<(shop_tls::MeshTls, shop_tls::MeshTls)> {
    use shop_tls::issuer::{DEFAULT_VALIDITY, LocalCa};
    let dir = Box::leak(Box::new(tempfile::tempdir()?));
    let ca = LocalCa::generate("bench CA")?;
    let issue = |service: &str| -> anyhow::Result<shop_tls::MeshTls> {
        let identity = shop_tls::ServiceIdentity::shop(service)?;
        let issued = ca.issue(&identity, &[], DEFAULT_VALIDITY)?;
        Ok(shop_tls::MeshTls::load(ca.write(
            &issued,
            dir.path(),
            service,
        )?)?)
    };
    Ok((issue("server")?, issue("bench")?))
}

async fn clients(servers: &Handle) -> anyhow::Result<Clients> {
    let endpoint = |addr: SocketAddr| Channel::from_shared(format!("http://{addr}"));
    let bare = endpoint(serve(servers, false)?)?.connect().await?;
    let bare_deadline = endpoint(serve(servers, false)?)?.connect().await?;
    let bare_p2c = Channel::balance_list(
        [
            endpoint(serve(servers, false)?)?,
            endpoint(serve(servers, false)?)?,
        ]
        .into_iter(),
    );

    let mut config = DependencyConfig::new("bench", Endpoints::Static(vec![serve(servers, true)?]));
    config.timeout = Some(TIMEOUT);
    config.retry.idempotent_methods = ["/grpc.health.v1.Health/*".to_owned()].into();
    config.caller = Some("bench".to_owned());
    // Room for every worker: the bench measures the layers' cost, not their limits.
    config.bulkhead.max_concurrent = 1024;
    let direct = HealthClient::new(client::connect(&config).await?);
    config.endpoints = Endpoints::Static(vec![serve(servers, true)?, serve(servers, true)?]);
    let p2c = HealthClient::new(client::connect(&config).await?);
    let (server_tls, client_tls) = mtls_pair()?;
    let expected = server_tls.identity();
    config.endpoints = Endpoints::Static(vec![serve_with(servers, true, Some(server_tls))?]);
    config.endpoint.tls = Some(shop_tls::MtlsConnector::new(client_tls, expected));
    let mtls = HealthClient::new(client::connect(&config).await?);
    Ok(Clients {
        names: [
            "bare",
            "bare+deadline",
            "bare p2c",
            "stack direct",
            "stack p2c",
            "stack mTLS",
        ],
        baselines: [
            BASE_DIRECT,
            BASE_DIRECT,
            BASE_P2C,
            BASE_DIRECT,
            BASE_P2C,
            STACK_DIRECT,
        ],
        clients: [
            Client::Bare(HealthClient::new(bare)),
            Client::BareDeadline(HealthClient::new(bare_deadline)),
            Client::BareP2c(HealthClient::new(bare_p2c)),
            Client::Stack(direct),
            Client::Stack(p2c),
            Client::Stack(mtls),
        ],
    })
}

/// `concurrency` workers call back to back for `duration`.
async fn closed_loop(
    client: &Client,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while start.elapsed() < duration {
                    let begin = Instant::now();
                    client.check().await?;
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

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// What one client did in one round.
#[derive(Debug, Clone, Copy)]
struct RoundStats {
    throughput: f64,
    p50: f64,
    p99: f64,
}

/// Per client, its stats in every round.
type Rounds = [Vec<RoundStats>; N];

fn stats(mut run: Run) -> RoundStats {
    RoundStats {
        throughput: run.throughput(),
        p50: micros(run.percentile(0.50)),
        p99: micros(run.percentile(0.99)),
    }
}

/// Median over rounds of `f(client's round, baseline's round)`, and its range.
fn paired(
    rounds: &Rounds,
    i: usize,
    base: usize,
    f: impl Fn(&RoundStats, &RoundStats) -> f64,
) -> (f64, f64, f64) {
    let mut values: Vec<f64> = rounds[i]
        .iter()
        .zip(&rounds[base])
        .map(|(c, b)| f(c, b))
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(&mut values), lo, hi)
}

/// One line per client against its baseline: medians over rounds of the per-round ratio and
/// per-round differences, so drift between rounds cancels out.
fn report(label: &str, clients: &Clients, rounds: &Rounds) {
    for (i, name) in clients.names.iter().enumerate() {
        let base = clients.baselines[i];
        let mut throughput: Vec<f64> = rounds[i].iter().map(|r| r.throughput).collect();
        let mut p50: Vec<f64> = rounds[i].iter().map(|r| r.p50).collect();
        let mut p99: Vec<f64> = rounds[i].iter().map(|r| r.p99).collect();
        let ratio = paired(rounds, i, base, |c, b| c.throughput / b.throughput);
        let added50 = paired(rounds, i, base, |c, b| c.p50 - b.p50);
        let added99 = paired(rounds, i, base, |c, b| c.p99 - b.p99);
        println!(
            "{label:<8} {name:<13} vs {:<13} {:>6.0}/s ratio {:.3} [{:.2}..{:.2}] | p50 {:>6.1} µs {:>+6.1} \
             [{:>+6.1}..{:>+6.1}] | p99 {:>7.1} µs {:>+7.1} [{:>+7.1}..{:>+7.1}]",
            clients.names[base],
            median(&mut throughput),
            ratio.0,
            ratio.1,
            ratio.2,
            median(&mut p50),
            added50.0,
            added50.1,
            added50.2,
            median(&mut p99),
            added99.0,
            added99.1,
            added99.2,
        );
    }
}

async fn benchmark(servers: &Handle, rounds: usize, round: Duration) -> anyhow::Result<()> {
    let clients = clients(servers).await?;
    for client in &clients.clients {
        closed_loop(client, 4, Duration::from_millis(500)).await?; // connections, caches
    }
    println!(
        "{rounds} rounds of {round:?} per client, order rotated per round. Each figure is the \
         median over rounds: calls/s; ratio = calls/s over the baseline's in the same round \
         [range]; p50 and p99, and their difference to the baseline's in the same round [range]."
    );
    for concurrency in [1, 16, 64] {
        let mut stats_by_client: Rounds = Default::default();
        for r in 0..rounds {
            for k in 0..N {
                let i = (r + k) % N; // rotate the order
                let run = closed_loop(&clients.clients[i], concurrency, round).await?;
                stats_by_client[i].push(stats(run));
            }
        }
        report(&format!("c={concurrency}"), &clients, &stats_by_client);
    }
    Ok(())
}

async fn count(servers: &Handle, calls: usize, which: &str) -> anyhow::Result<()> {
    let Clients { clients, .. } = clients(servers).await?;
    let index = match which {
        "bare" => 0,
        "bare+deadline" => 1,
        "bare-p2c" => 2,
        "stack" => 3,
        "p2c" => 4,
        "mtls" => 5,
        other => bail!("unknown client {other}: bare, bare+deadline, bare-p2c, stack, p2c or mtls"),
    };
    let mut client = clients[index].clone();
    for _ in 0..calls {
        client.check().await?;
    }
    Ok(())
}

/// Clients and servers run on two runtimes of one worker thread each, as two processes on a
/// two-core machine would: each side keeps a core, and where tasks land does not change from one
/// round to the next (with one shared two-worker runtime they did: per-round ratios at
/// concurrency 64 ranged 0.56-1.83, against 0.78-1.24 this way).
fn main() -> anyhow::Result<()> {
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("servers")
        .enable_all()
        .build()?;
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("clients")
        .enable_all()
        .build()?;
    clients.block_on(run(servers.handle()))
}

async fn run(servers: &Handle) -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Some(at) = args.iter().position(|a| a == "--calls") {
        let calls = args
            .get(at + 1)
            .context("--calls N")?
            .parse()
            .context("--calls N")?;
        let which = args
            .iter()
            .position(|a| a == "--client")
            .and_then(|at| args.get(at + 1))
            .map_or("stack", String::as_str);
        return count(servers, calls, which).await;
    }
    let rounds = args
        .first()
        .map(|a| a.parse())
        .transpose()
        .context("rounds")?
        .unwrap_or(10);
    let seconds: f64 = args
        .get(1)
        .map(|a| a.parse())
        .transpose()
        .context("seconds")?
        .unwrap_or(1.0);
    benchmark(servers, rounds, Duration::from_secs_f64(seconds)).await
}
