//! `mesh-bench`: the order-flow benchmark against a mesh started with
//! `meshctl up --release --detach` (see `scripts/bench-orders` and `docs/benchmarks.md`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use meshctl::state::MeshState;
use shop_bench::{ceiling, counters, cpu, flow, report::Report};

/// Measures orders/s and latency from PlaceOrder to CONFIRMED at a fixed offered rate, and the
/// ceilings of the same machine, and prints a Markdown report.
#[derive(Debug, Parser)]
struct Args {
    /// meshctl's state directory of the running mesh.
    #[arg(long, default_value = ".meshctl")]
    state_dir: PathBuf,
    /// Offered PlaceOrder rate, orders per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds of load before measuring (connections, caches, JIT of the query plans).
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Orders in flight at most; starts beyond are shed and counted.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Seconds each ceiling is measured.
    #[arg(long, default_value_t = 5)]
    ceiling_seconds: u64,
    /// Products the orders spread over (stock rows contend less with more).
    #[arg(long, default_value_t = 50)]
    products: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let state = MeshState::running(&args.state_dir).context("no running mesh")?;
    let ceiling_time = Duration::from_secs(args.ceiling_seconds);

    eprintln!("ceilings ({} s each)...", args.ceiling_seconds);
    let pg = ceiling::pg_commits(
        &format!("postgres://postgres@127.0.0.1:{}/", state.postgres.port),
        32,
        ceiling_time,
    )
    .await?;
    let grpc = ceiling::grpc_calls(4, 64, ceiling_time).await?;
    let jetstream = ceiling::jetstream_publishes(
        &format!("nats://127.0.0.1:{}", state.nats.port),
        64,
        ceiling_time,
    )
    .await?;

    eprintln!("seeding {} products...", args.products);
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let products = flow::seed(
        state.channel("catalog")?,
        state.channel("inventory")?,
        &tag,
        args.products,
    )
    .await?;

    eprintln!("idle counters (5 s)...");
    let before_idle = counters::read(&state).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = counters::read(&state).await?.since(&before_idle);

    // The benchmark's orders are one customer's: its token admits them.
    let (customer, token) = meshctl::fixture::customer(&state, "bench").await?;
    let orders = state.user_channel("orders", &token)?;
    eprintln!("warm-up: {} s at {}/s...", args.warmup, args.rate);
    flow::run(
        orders.clone(),
        &customer,
        &products,
        args.rate,
        Duration::from_secs(args.warmup),
        args.max_in_flight,
    )
    .await?;

    eprintln!("measuring: {} s at {}/s...", args.seconds, args.rate);
    let before = counters::read(&state).await?;
    let cpu_before = cpu::read(&state);
    let result = flow::run(
        orders,
        &customer,
        &products,
        args.rate,
        Duration::from_secs(args.seconds),
        args.max_in_flight,
    )
    .await?;
    let cpu = cpu::read(&state).since(&cpu_before);
    // pg_stat_database lags by up to a second; outbox relays publish the last events.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cost = counters::read(&state)
        .await?
        .since(&before)
        .less_idle(&idle);

    let report = Report {
        rate: args.rate,
        flow: result,
        cost,
        cpu,
        pg,
        grpc,
        jetstream,
    };
    let text = report.markdown();
    // The report is this tool's output.
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
    Ok(())
}
