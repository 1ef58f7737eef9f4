//! Percentiles and the printed report (Markdown, for `docs/benchmarks.md`).

use std::fmt::Write as _;
use std::time::Duration;

use crate::ceiling::Rate;
use crate::counters::Delta;
use crate::cpu::CpuDelta;
use crate::flow::{FlowResult, Outcome};

/// The `p`-quantile (0..=1) of `sorted` by nearest rank; zero when empty.
#[must_use]
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // The rank is within 0..len, far below 2^52.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Offered PlaceOrder rate.
    pub rate: f64,
    /// The order flow.
    pub flow: FlowResult,
    /// Counters over the flow, the idle rate taken off.
    pub cost: Delta,
    /// CPU time per process over the measured flow (no idle rate taken off).
    pub cpu: CpuDelta,
    /// Single-row commits/s of the mesh's PostgreSQL.
    pub pg: Rate,
    /// Bare unary gRPC calls/s.
    pub grpc: Rate,
    /// Acknowledged JetStream publishes/s.
    pub jetstream: Rate,
}

impl Report {
    /// The report as Markdown.
    #[must_use]
    pub fn markdown(&self) -> String {
        let flow = &self.flow;
        let mut confirmed: Vec<Duration> = flow
            .outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Confirmed(latency) => Some(*latency),
                _ => None,
            })
            .collect();
        confirmed.sort_unstable();
        let count = |wanted: Outcome| flow.outcomes.iter().filter(|o| **o == wanted).count();
        let secs = flow.elapsed.as_secs_f64().max(f64::EPSILON);
        #[allow(clippy::cast_precision_loss)]
        let per_sec = confirmed.len() as f64 / secs;
        let mut place = flow.place_latencies.clone();
        place.sort_unstable();
        #[allow(clippy::cast_precision_loss)]
        let orders = (flow.started.max(1)) as f64;

        let mut out = String::new();
        let _ = writeln!(out, "| measure | value |\n|---|---|");
        let _ = writeln!(out, "| offered PlaceOrder rate | {:.0}/s |", self.rate);
        let _ = writeln!(
            out,
            "| orders started / shed (max in flight) | {} / {} |",
            flow.started, flow.shed
        );
        let _ = writeln!(
            out,
            "| confirmed / cancelled / failed / timed out | {} / {} / {} / {} |",
            confirmed.len(),
            count(Outcome::Cancelled),
            count(Outcome::Failed),
            count(Outcome::TimedOut)
        );
        let _ = writeln!(
            out,
            "| **orders confirmed per second** | **{per_sec:.1}** |"
        );
        let _ = writeln!(
            out,
            "| PlaceOrder → CONFIRMED p50 / p99 / max | {} / {} / {} |",
            ms(percentile(&confirmed, 0.50)),
            ms(percentile(&confirmed, 0.99)),
            ms(confirmed.last().copied().unwrap_or_default())
        );
        let _ = writeln!(
            out,
            "| PlaceOrder call p50 / p99 | {} / {} |",
            ms(percentile(&place, 0.50)),
            ms(percentile(&place, 0.99))
        );
        let _ = writeln!(
            out,
            "| ceiling: PostgreSQL single-row commits/s | {:.0} |",
            self.pg.per_sec()
        );
        let _ = writeln!(
            out,
            "| ceiling: bare unary gRPC calls/s | {:.0} |",
            self.grpc.per_sec()
        );
        let _ = writeln!(
            out,
            "| ceiling: JetStream acknowledged publishes/s (fsync always) | {:.0} |",
            self.jetstream.per_sec()
        );
        let _ = writeln!(
            out,
            "| per order: commits / gRPC calls / events | {:.1} / {:.1} / {:.1} |",
            self.cost.commits / orders,
            self.cost.calls / orders,
            self.cost.events / orders
        );
        let bound = |per_order: f64, ceiling: f64| {
            if per_order > 0.0 {
                format!("{:.0}", ceiling / per_order)
            } else {
                "-".into()
            }
        };
        let _ = writeln!(
            out,
            "| orders/s each ceiling allows (ceiling ÷ per-order cost): commits / calls / events | {} / {} / {} |",
            bound(self.cost.commits / orders, self.pg.per_sec()),
            bound(self.cost.calls / orders, self.grpc.per_sec()),
            bound(self.cost.events / orders, self.jetstream.per_sec()),
        );
        let _ = writeln!(
            out,
            "\n| service / stream | commits per order | calls per order | events per order |\n|---|---|---|---|"
        );
        for (name, (commits, calls, events)) in &self.cost.detail {
            let _ = writeln!(
                out,
                "| {name} | {:.2} | {:.2} | {:.2} |",
                commits / orders,
                calls / orders,
                events / orders
            );
        }
        self.cpu_table(&mut out, orders);
        out
    }

    /// Where the time went: CPU per order of each process, and the share of the cores used.
    fn cpu_table(&self, out: &mut String, orders: f64) {
        let wall = self.cpu.elapsed.as_secs_f64().max(f64::EPSILON);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let total = self.cpu.total().as_secs_f64();
        let _ = writeln!(
            out,
            "\nCPU over the measured {wall:.1} s: {total:.1} s of {cores} cores × {wall:.1} s \
             ({:.0} % of the machine); {:.2} ms of CPU per order placed.\n",
            100.0 * total / (wall * f64::from(u32::try_from(cores).unwrap_or(1))),
            1000.0 * total / orders
        );
        let _ = writeln!(
            out,
            "| process | CPU ms per order | share of the CPU used |\n|---|---|---|"
        );
        for (name, spent) in &self.cpu.by_name {
            let secs = spent.as_secs_f64();
            let _ = writeln!(
                out,
                "| {name} | {:.2} | {:.0} % |",
                1000.0 * secs / orders,
                100.0 * secs / total.max(f64::EPSILON)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
