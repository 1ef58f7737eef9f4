//! CPU time of every process of the mesh, from `/proc/<pid>/stat`: where an order's time goes.
//!
//! The mesh runs on the same cores as the benchmark, so CPU seconds per order, per process,
//! say which part to make cheaper (or that the machine, not a wait, is the limit). PostgreSQL
//! is the postmaster and every process it forked (backends, WAL writer, checkpointer); the
//! backends of the services' pools live as long as the pools, so a reading before and after a
//! run sees the same processes. `mesh-bench` itself is counted too: it shares the cores.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meshctl::state::MeshState;

/// CPU time (user + system) per process group at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuTimes {
    /// When they were read.
    pub at: Option<Instant>,
    /// Per name (`postgres`, `nats`, each service, `mesh-bench`).
    pub by_name: BTreeMap<String, Duration>,
}

/// CPU spent between two readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuDelta {
    /// Wall time between the readings.
    pub elapsed: Duration,
    /// CPU time per name, largest first.
    pub by_name: Vec<(String, Duration)>,
}

/// `utime + stime` and the parent of one process, from the text of its `/proc/<pid>/stat`.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces: fields after the last
    // ')' start at field 3 (state).
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let parent = fields.get(1)?.parse().ok()?; // field 4
    let user: u64 = fields.get(11)?.parse().ok()?; // field 14
    let system: u64 = fields.get(12)?.parse().ok()?; // field 15
    Some((parent, user + system))
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
}

/// Every live process: pid → (parent, CPU ticks).
fn processes() -> BTreeMap<u32, (u32, u64)> {
    let mut all = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return all;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(parsed) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            all.insert(pid, parsed);
        }
    }
    all
}

/// Ticks of `root` and every process below it.
fn tree_ticks(all: &BTreeMap<u32, (u32, u64)>, root: u32) -> u64 {
    let mut total = 0;
    let mut frontier = vec![root];
    while let Some(pid) = frontier.pop() {
        if let Some((_, ticks)) = all.get(&pid) {
            total += ticks;
        }
        frontier.extend(
            all.iter()
                .filter(|(_, (parent, _))| *parent == pid)
                .map(|(child, _)| *child),
        );
    }
    total
}

/// Reads the CPU time of the mesh in `state` and of this process.
#[must_use]
pub fn read(state: &MeshState) -> CpuTimes {
    let all = processes();
    let mut by_name = BTreeMap::new();
    let mut put = |name: &str, ticks: u64| {
        by_name.insert(name.to_owned(), ticks_to_duration(ticks));
    };
    put("postgres", tree_ticks(&all, state.postgres.pid));
    put("nats", tree_ticks(&all, state.nats.pid));
    for service in &state.services {
        put(&service.name, tree_ticks(&all, service.pid));
    }
    put("mesh-bench", tree_ticks(&all, std::process::id()));
    CpuTimes {
        at: Some(Instant::now()),
        by_name,
    }
}

impl CpuTimes {
    /// CPU spent from `earlier` to `self`, largest first.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> CpuDelta {
        let elapsed = match (self.at, earlier.at) {
            (Some(now), Some(then)) => now.saturating_duration_since(then),
            _ => Duration::ZERO,
        };
        let mut by_name: Vec<(String, Duration)> = self
            .by_name
            .iter()
            .map(|(name, now)| {
                let then = earlier.by_name.get(name).copied().unwrap_or_default();
                (name.clone(), now.saturating_sub(then))
            })
            .collect();
        by_name.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        CpuDelta { elapsed, by_name }
    }
}

impl CpuDelta {
    /// CPU time of all processes together.
    #[must_use]
    pub fn total(&self) -> Duration {
        self.by_name.iter().map(|(_, d)| *d).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_parent_and_cpu_ticks_even_with_spaces_in_the_name() {
        let stat = "4242 (postgres: shop orders) S 17 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 40 0 0 20 0 1 0 12345 200000000 3000 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((17, 290)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_and_its_children_are_summed() {
        let mut all = BTreeMap::new();
        all.insert(1, (0, 5));
        all.insert(10, (1, 7));
        all.insert(11, (10, 3));
        all.insert(20, (0, 100));
        assert_eq!(tree_ticks(&all, 1), 15);
        assert_eq!(tree_ticks(&all, 20), 100);
        assert_eq!(tree_ticks(&all, 99), 0);
    }

    #[test]
    fn the_live_reading_of_this_process_moves_forward() {
        let all = processes();
        assert!(
            all.contains_key(&std::process::id()),
            "/proc lists this process"
        );
        let before = ticks_to_duration(tree_ticks(&all, std::process::id()));
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = ticks_to_duration(tree_ticks(&processes(), std::process::id()));
        assert!(after > before, "{before:?} -> {after:?}");
    }
}
