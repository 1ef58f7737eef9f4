//! `meshctl load`: steady traffic against the running mesh, with a report per RPC.
//!
//! Two scenarios. `place-order` (the default) places orders of one seeded product ([`seed::TEA`],
//! stock for a million) paid with `tok_visa`, each with its own idempotency key, so every call
//! starts a saga. `reads` is a read-heavy shop mix: mostly `ListProducts` and `GetProduct`
//! against catalog, and a few `Login`s against identity (argon2 makes them expensive on
//! purpose, as they are in production); the fixture it needs (one user, one product) is
//! created first.
//!
//! Workers (`--concurrency`) call back to back for the given time, or at a fixed total rate
//! (`--rate`, [`crate::pace`]), with a progress line once a second. The report gives calls,
//! calls/s, p50 and p99 per RPC, and the failures by status code; the command fails if any
//! call did.
//!
//! The load comes from one caller, so it meets the servers' per-caller rate limit with the
//! default settings. An answer that says so (`RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo`
//! detail, as our rate limit sends) is not a failure: the worker waits the delay it names and
//! goes on, and the report counts such calls separately as throttled.

mod target;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shop_proto::catalog::catalog_service_client::CatalogServiceClient;
use shop_proto::identity::identity_service_client::IdentityServiceClient;
use tonic_types::StatusExt as _;

use crate::error::{MeshError, Result};
use crate::pace::{CallEnd, Pace, Progress};
use crate::state::MeshState;
use crate::table;
use target::{Rpc, Target};

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadOptions {
    /// How long to run.
    pub duration: Duration,
    /// Workers calling at once.
    pub concurrency: usize,
    /// What to call.
    pub scenario: Scenario,
    /// Calls per second over all workers; back to back when `None`.
    pub rate: Option<f64>,
}

/// What `meshctl load` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `OrderService/PlaceOrder`, one seeded product, `tok_visa`.
    PlaceOrder,
    /// Catalog reads with a few identity logins.
    Reads,
}

/// What one worker saw.
#[derive(Debug, Default)]
struct Tally {
    latencies: BTreeMap<Rpc, Vec<Duration>>,
    failures: BTreeMap<(Rpc, String), usize>,
    /// Calls a server's rate limit turned away with a RetryInfo.
    throttled: BTreeMap<Rpc, usize>,
}

/// The wait a throttled call asks for: `RESOURCE_EXHAUSTED` with a `RetryInfo` detail (a
/// server's per-caller rate limit), `None` for any other error.
fn retry_after(status: &tonic::Status) -> Option<Duration> {
    /// The wait when the RetryInfo names no delay.
    const UNSPECIFIED: Duration = Duration::from_millis(10);
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let info = status.get_details_retry_info()?;
    Some(info.retry_delay.unwrap_or(UNSPECIFIED))
}

/// Runs the load against the mesh recorded in `state_dir` and prints the report; returns
/// whether every call succeeded.
pub async fn load(state_dir: &Path, options: LoadOptions) -> Result<bool> {
    let state = MeshState::running(state_dir)?;
    let (target, mix) = match options.scenario {
        Scenario::PlaceOrder => (Target::for_orders(&state).await?, "PlaceOrder, tok_visa"),
        Scenario::Reads => (
            Target::create(
                CatalogServiceClient::new(state.channel("catalog")?),
                IdentityServiceClient::new(state.channel("identity")?),
            )
            .await?,
            "75 % ListProducts, 20 % GetProduct, 5 % Login",
        ),
    };
    let pacing = options.rate.map_or_else(
        || "back to back".to_owned(),
        |rate| format!("{rate}/s in all"),
    );
    println!(
        "load: {} worker(s) for {:?}, {pacing} ({mix})",
        options.concurrency, options.duration
    );

    let started = Instant::now();
    let pace = Pace::new(started, options.rate);
    let progress = Arc::new(Progress::default());
    let shown = tokio::spawn(Arc::clone(&progress).show(started, options.duration));
    let workers: Vec<_> = (0..options.concurrency.max(1))
        .map(|_| {
            let target = target.clone();
            let (pace, progress) = (pace.clone(), Arc::clone(&progress));
            tokio::spawn(work(target, options, started, pace, progress))
        })
        .collect();
    let mut total = Tally::default();
    for worker in workers {
        let tally = worker.await.map_err(|e| MeshError::Worker(e.to_string()))?;
        for (rpc, latencies) in tally.latencies {
            total.latencies.entry(rpc).or_default().extend(latencies);
        }
        for (key, count) in tally.failures {
            *total.failures.entry(key).or_default() += count;
        }
        for (rpc, count) in tally.throttled {
            *total.throttled.entry(rpc).or_default() += count;
        }
    }
    let elapsed = started.elapsed();
    shown.abort();
    print!("{}", report(&mut total, elapsed));
    Ok(total.failures.is_empty())
}

/// One worker: calls until the time is up, on the pace, counting what it saw.
async fn work(
    mut target: Target,
    options: LoadOptions,
    started: Instant,
    pace: Pace,
    progress: Arc<Progress>,
) -> Tally {
    let mut tally = Tally::default();
    while pace.wait_turn(options.duration).await {
        let rpc = match options.scenario {
            Scenario::PlaceOrder => Rpc::PlaceOrder,
            Scenario::Reads => Rpc::draw(),
        };
        let begin = Instant::now();
        let outcome = target.call(rpc).await;
        let elapsed = begin.elapsed();
        match outcome {
            Ok(()) => {
                progress.record(CallEnd::Ok);
                tally.latencies.entry(rpc).or_default().push(elapsed);
            }
            Err(status) => match retry_after(&status) {
                Some(delay) => {
                    progress.record(CallEnd::Throttled);
                    *tally.throttled.entry(rpc).or_default() += 1;
                    let left = options.duration.saturating_sub(started.elapsed());
                    tokio::time::sleep(delay.min(left)).await;
                }
                None => {
                    progress.record(CallEnd::Failed);
                    let code = format!("{:?}", status.code());
                    *tally.failures.entry((rpc, code)).or_default() += 1;
                }
            },
        }
    }
    tally
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// The report: one row per RPC, then the failures.
fn report(total: &mut Tally, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    // Every RPC that was called, including those whose every call failed.
    let rpcs: std::collections::BTreeSet<Rpc> = total
        .latencies
        .keys()
        .copied()
        .chain(total.failures.keys().map(|(rpc, _)| *rpc))
        .chain(total.throttled.keys().copied())
        .collect();
    let mut rows = Vec::new();
    for rpc in rpcs {
        let latencies = total.latencies.entry(rpc).or_default();
        latencies.sort_unstable();
        let failed: usize = total
            .failures
            .iter()
            .filter(|((r, _), _)| *r == rpc)
            .map(|(_, n)| n)
            .sum();
        let throttled = total.throttled.get(&rpc).copied().unwrap_or_default();
        rows.push(vec![
            rpc.name().to_owned(),
            latencies.len().to_string(),
            failed.to_string(),
            throttled.to_string(),
            format!("{:.0}", latencies.len() as f64 / seconds),
            format!("{:.1?}", percentile(latencies, 0.50)),
            format!("{:.1?}", percentile(latencies, 0.99)),
        ]);
    }
    let mut out = table::render(
        &["rpc", "ok", "failed", "throttled", "calls/s", "p50", "p99"],
        &rows,
    );
    let throttled: usize = total.throttled.values().sum();
    if throttled > 0 {
        out.push_str(&format!(
            "\nthrottled: {throttled} call(s) over a server's per-caller rate limit \
             (RESOURCE_EXHAUSTED with RetryInfo); waited as asked, not failures\n"
        ));
    }
    if total.failures.is_empty() {
        out.push_str("\nno failures\n");
    } else {
        out.push_str("\nFAILURES\n");
        for ((rpc, code), count) in &total.failures {
            out.push_str(&format!("  {} {code}: {count}\n", rpc.name()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_mostly_reads() {
        let mut counts = BTreeMap::<Rpc, usize>::new();
        for _ in 0..10_000 {
            *counts.entry(Rpc::draw()).or_default() += 1;
        }
        assert!(
            (7000..8000).contains(&counts[&Rpc::ListProducts]),
            "{counts:?}"
        );
        assert!(
            (1500..2500).contains(&counts[&Rpc::GetProduct]),
            "{counts:?}"
        );
        assert!((200..800).contains(&counts[&Rpc::Login]), "{counts:?}");
    }

    #[test]
    fn reports_rows_and_failures() {
        let mut tally = Tally::default();
        tally.latencies.insert(
            Rpc::GetProduct,
            (1..=100).map(Duration::from_millis).collect(),
        );
        let text = report(&mut tally, Duration::from_secs(2));
        assert!(text.contains("CatalogService/GetProduct"), "{text}");
        assert!(text.contains("50"), "{text}"); // 100 calls in 2 s
        assert!(text.contains("no failures"), "{text}");
        tally.failures.insert((Rpc::Login, "Unavailable".into()), 3);
        let text = report(&mut tally, Duration::from_secs(2));
        assert!(
            text.contains("IdentityService/Login Unavailable: 3"),
            "{text}"
        );
        tally.failures.clear();
        tally.throttled.insert(Rpc::ListProducts, 7);
        let text = report(&mut tally, Duration::from_secs(2));
        assert!(text.contains("throttled: 7 call(s)"), "{text}");
        assert!(text.contains("no failures"), "{text}");
    }

    #[test]
    fn only_rate_limit_answers_with_retry_info_are_throttling() {
        use tonic_types::ErrorDetails;

        let delay = Duration::from_millis(3);
        let throttled = tonic::Status::with_error_details(
            tonic::Code::ResourceExhausted,
            "rate limited",
            ErrorDetails::with_retry_info(Some(delay)),
        );
        assert_eq!(retry_after(&throttled), Some(delay));
        let shed = tonic::Status::resource_exhausted("server overloaded");
        assert_eq!(retry_after(&shed), None);
        let down = tonic::Status::with_error_details(
            tonic::Code::Unavailable,
            "down",
            ErrorDetails::with_retry_info(Some(delay)),
        );
        assert_eq!(retry_after(&down), None);
    }
}
