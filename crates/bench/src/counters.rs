//! The mesh's own counters, read before and after a run: what an order costs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use meshctl::state::MeshState;

/// Largest `/metrics` page read.
const MAX_METRICS_BYTES: u64 = 8 << 20;

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// When they were read.
    pub at: Option<Instant>,
    /// `xact_commit` per service database.
    pub commits: BTreeMap<String, i64>,
    /// `shop_grpc_server_handled_total` summed over methods and codes, per service.
    pub calls: BTreeMap<String, f64>,
    /// Messages stored per `SHOP_*` stream.
    pub events: BTreeMap<String, u64>,
}

/// What changed between two readings, and over how long.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    /// Time between the readings.
    pub elapsed: Duration,
    /// Commits, all service databases.
    pub commits: f64,
    /// gRPC calls served, all services.
    pub calls: f64,
    /// Messages stored, all streams but the dead letters.
    pub events: f64,
    /// Per service (commits, calls) and per stream (events), for the detail table.
    pub detail: BTreeMap<String, (f64, f64, f64)>,
}

/// Reads every counter of the mesh in `state`.
pub async fn read(state: &MeshState) -> anyhow::Result<Counters> {
    let mut counters = Counters {
        at: Some(Instant::now()),
        ..Counters::default()
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            state.postgres.port
        ))
        .await
        .context("connect to the mesh's PostgreSQL")?;
    let names: Vec<String> = state.services.iter().map(|s| s.name.clone()).collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT datname::text, xact_commit FROM pg_stat_database WHERE datname = ANY($1)",
    )
    .bind(&names)
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    counters.commits = rows.into_iter().collect();

    for service in &state.services {
        let Some(page) =
            meshctl::probe::http_get(service.admin_addr, "/metrics", MAX_METRICS_BYTES).await
        else {
            continue;
        };
        counters
            .calls
            .insert(service.name.clone(), handled_total(&page));
    }

    let client = async_nats::connect(format!("nats://127.0.0.1:{}", state.nats.port))
        .await
        .context("connect to the mesh's NATS")?;
    let js = async_nats::jetstream::new(client);
    let mut streams = js.streams();
    while let Some(info) = streams.try_next().await? {
        if info.config.name.starts_with("SHOP_") {
            counters
                .events
                .insert(info.config.name.clone(), info.state.messages);
        }
    }
    Ok(counters)
}

/// Sum of every `shop_grpc_server_handled_total` sample in a Prometheus text page.
fn handled_total(page: &str) -> f64 {
    page.lines()
        .filter(|line| line.starts_with("shop_grpc_server_handled_total"))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

impl Counters {
    /// What changed from `earlier` to `self`.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Delta {
        let elapsed = match (self.at, earlier.at) {
            (Some(now), Some(then)) => now.saturating_duration_since(then),
            _ => Duration::ZERO,
        };
        let mut delta = Delta {
            elapsed,
            ..Delta::default()
        };
        for (name, commits) in &self.commits {
            // Counts stay far below 2^52.
            #[allow(clippy::cast_precision_loss)]
            let change = (commits - earlier.commits.get(name).copied().unwrap_or(0)) as f64;
            delta.commits += change;
            delta.detail.entry(name.clone()).or_default().0 = change;
        }
        for (name, calls) in &self.calls {
            let change = calls - earlier.calls.get(name).copied().unwrap_or(0.0);
            delta.calls += change;
            delta.detail.entry(name.clone()).or_default().1 = change;
        }
        for (name, events) in &self.events {
            #[allow(clippy::cast_precision_loss)]
            let change =
                events.saturating_sub(earlier.events.get(name).copied().unwrap_or(0)) as f64;
            if name != "SHOP_DLQ" {
                delta.events += change;
            }
            delta.detail.entry(name.clone()).or_default().2 = change;
        }
        delta
    }
}

impl Delta {
    /// This delta less what `idle` (a reading of the idle mesh) would have counted over the
    /// same time: what the load itself caused.
    #[must_use]
    pub fn less_idle(&self, idle: &Self) -> Self {
        let idle_secs = idle.elapsed.as_secs_f64();
        let scale = if idle_secs > 0.0 {
            self.elapsed.as_secs_f64() / idle_secs
        } else {
            0.0
        };
        let mut detail = self.detail.clone();
        for (name, (commits, calls, events)) in &mut detail {
            if let Some((c, k, e)) = idle.detail.get(name) {
                *commits = (*commits - c * scale).max(0.0);
                *calls = (*calls - k * scale).max(0.0);
                *events = (*events - e * scale).max(0.0);
            }
        }
        Self {
            elapsed: self.elapsed,
            commits: (self.commits - idle.commits * scale).max(0.0),
            calls: (self.calls - idle.calls * scale).max(0.0),
            events: (self.events - idle.events * scale).max(0.0),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_handled_calls_of_every_method_and_code() {
        let page = "# TYPE shop_grpc_server_handled counter\n\
            shop_grpc_server_handled_total{method=\"/a/B\",code=\"OK\"} 12\n\
            shop_grpc_server_handled_total{method=\"/a/C\",code=\"NOT_FOUND\"} 3\n\
            shop_grpc_server_in_flight 7\n";
        assert!((handled_total(page) - 15.0).abs() < f64::EPSILON);
    }

    #[test]
    fn idle_rate_is_taken_off_in_proportion_to_time() {
        let mut idle = Delta {
            elapsed: Duration::from_secs(5),
            commits: 50.0,
            calls: 0.0,
            events: 0.0,
            ..Delta::default()
        };
        idle.detail.insert("orders".into(), (50.0, 0.0, 0.0));
        let mut load = Delta {
            elapsed: Duration::from_secs(10),
            commits: 1_100.0,
            calls: 400.0,
            events: 300.0,
            ..Delta::default()
        };
        load.detail.insert("orders".into(), (1_100.0, 400.0, 300.0));
        let caused = load.less_idle(&idle);
        assert!((caused.commits - 1_000.0).abs() < 1e-9);
        assert!((caused.calls - 400.0).abs() < 1e-9);
        assert_eq!(caused.detail["orders"], (1_000.0, 400.0, 300.0));
    }
}
