//! What tracing costs a call: the same unary call through the kit's client and server stacks
//! (`client::connect` → `GrpcServerBuilder`, `grpc.health.v1.Health/Check`), with traces off,
//! on with every trace sampled, and on with 1 % sampled, measured in the same run. Not part of
//! CI.
//!
//! ```text
//! cargo bench -p shop-runtime --bench tracing -- [rounds] [seconds-per-round]
//! ```
//!
//! Each variant runs in a child process of its own (the tracing subscriber is global to a
//! process), configured only by the environment, exactly as a service is:
//! - `off`: no `OTEL_EXPORTER_OTLP_ENDPOINT`: spans exist for the log lines, none is exported;
//! - `on 1.0`: the endpoint of an OTLP receiver in the driver process (`shop-tracestore`),
//!   default sampler (`parentbased_always_on`): a client and a server span per call, exported;
//! - `on 0.01`: the same with `OTEL_TRACES_SAMPLER=parentbased_traceidratio`,
//!   `OTEL_TRACES_SAMPLER_ARG=0.01`.
//!
//! `RUST_LOG=info` in all three, the services' default. At concurrency 1 and 16, `rounds`
//! rounds (default 5) each run every variant for `seconds` (default 2) in an order rotated per
//! round; every figure is the median over rounds of the ratio to `off` in the same round
//! (calls/s) or the difference from it (p50, p99), with the range across rounds.
#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const VARIANTS: [(&str, &[(&str, &str)]); 3] = [
    ("off", &[]),
    (
        "on 1.0",
        &[("OTEL_TRACES_SAMPLER", "parentbased_always_on")],
    ),
    (
        "on 0.01",
        &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ],
    ),
];

#[derive(Debug, Serialize, Deserialize)]
struct Measured {
    calls_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

/// The child: one variant, configured by the environment, measured for `seconds`.
async fn child(seconds: f64, concurrency: usize) -> anyhow::Result<Measured> {
    let telemetry = shop_runtime::telemetry::init(
        "bench",
        &shop_runtime::TelemetryConfig {
            log_format: shop_runtime::LogFormat::Text,
        },
    );
    let mut config = shop_runtime::ServerConfig::ephemeral();
    config.rate_limit_per_second = 0;
    let builder = shop_runtime::GrpcServerBuilder::new(config, shop_proto::FILE_DESCRIPTOR_SET);
    let metrics = builder.metrics().clone();
    let server = builder.bind().await?;
    let addr = server.grpc_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let dependency = shop_runtime::client::dependency("bench", "bench", &format!("http://{addr}"))?;
    let channel = shop_runtime::client::connect(&dependency, &metrics).await?;
    let client = HealthClient::new(channel);

    let call = |mut client: HealthClient<_>| async move {
        client
            .check(HealthCheckRequest::default())
            .await
            .map(|_| ())
    };
    // Warm up: connections, first-call allocations.
    let warm = Instant::now() + Duration::from_millis(300);
    while Instant::now() < warm {
        call(client.clone()).await?;
    }
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let client = client.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                call(client.clone()).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, tonic::Status>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = workers.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let calls_per_sec = latencies.len() as f64 / elapsed.as_secs_f64();
    let _ = stop.send(());
    running.await??;
    drop(telemetry);
    Ok(Measured {
        calls_per_sec,
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
    })
}

/// Runs one variant in a child process.
fn run_variant(
    env: &[(&str, &str)],
    endpoint: Option<&str>,
    seconds: f64,
    concurrency: usize,
) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(exe);
    command
        .args(["--child", &seconds.to_string(), &concurrency.to_string()])
        .env("RUST_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .envs(env.iter().copied());
    if let Some(endpoint) = endpoint {
        command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    }
    let output = command.output()?;
    if !output.status.success() {
        bail!(
            "variant failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8(output.stdout)?;
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no result line")?;
    Ok(serde_json::from_str(line)?)
}

fn median_and_range(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    (median, values[0], values[values.len() - 1])
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--child") {
        let seconds: f64 = args.get(1).context("seconds")?.parse()?;
        let concurrency: usize = args.get(2).context("concurrency")?.parse()?;
        let runtime = tokio::runtime::Runtime::new()?;
        let measured = runtime.block_on(child(seconds, concurrency))?;
        println!("{}", serde_json::to_string(&measured)?);
        return Ok(());
    }
    let rounds: usize = args.first().map_or(Ok(5), |a| a.parse())?;
    let seconds: f64 = args.get(1).map_or(Ok(2.0), |a| a.parse())?;

    // The receiver every "on" variant exports to, in this (the driver's) process.
    let runtime = tokio::runtime::Runtime::new()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let store = shop_tracestore::SpanStore::new(shop_tracestore::StoreLimits {
        max_traces: 10_000,
        max_spans_per_trace: 16,
    });
    runtime.spawn(shop_tracestore::serve(
        listener,
        store.clone(),
        std::future::pending(),
    ));

    println!("tracing cost: {rounds} rounds of {seconds} s per variant; medians (range)");
    for concurrency in [1, 16] {
        let mut results: Vec<Vec<Measured>> = (0..VARIANTS.len()).map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for offset in 0..VARIANTS.len() {
                let index = (round + offset) % VARIANTS.len();
                let (name, env) = VARIANTS[index];
                let endpoint = (name != "off").then_some(endpoint.as_str());
                results[index].push(run_variant(env, endpoint, seconds, concurrency)?);
            }
        }
        println!("\nconcurrency {concurrency}");
        println!(
            "{:<9} {:>12} {:>22} {:>22} {:>22}",
            "variant", "calls/s", "vs off", "p50 µs (Δ)", "p99 µs (Δ)"
        );
        for (index, (name, _)) in VARIANTS.iter().enumerate() {
            let of =
                |f: fn(&Measured) -> f64| -> Vec<f64> { results[index].iter().map(f).collect() };
            let ratio: Vec<f64> = results[index]
                .iter()
                .zip(&results[0])
                .map(|(m, base)| m.calls_per_sec / base.calls_per_sec)
                .collect();
            let d50: Vec<f64> = results[index]
                .iter()
                .zip(&results[0])
                .map(|(m, base)| m.p50_us - base.p50_us)
                .collect();
            let d99: Vec<f64> = results[index]
                .iter()
                .zip(&results[0])
                .map(|(m, base)| m.p99_us - base.p99_us)
                .collect();
            let (cps, _, _) = median_and_range(of(|m| m.calls_per_sec));
            let (r, rlo, rhi) = median_and_range(ratio);
            let (p50, _, _) = median_and_range(of(|m| m.p50_us));
            let (p99, _, _) = median_and_range(of(|m| m.p99_us));
            let (d50, _, _) = median_and_range(d50);
            let (d99, _, _) = median_and_range(d99);
            println!(
                "{name:<9} {cps:>12.0} {:>22} {:>22} {:>22}",
                format!("{r:.3} ({rlo:.3}–{rhi:.3})"),
                format!("{p50:.0} ({d50:+.0})"),
                format!("{p99:.0} ({d99:+.0})"),
            );
        }
    }
    println!(
        "\ntraces received by the driver's receiver: {}",
        store.len()
    );
    Ok(())
}
