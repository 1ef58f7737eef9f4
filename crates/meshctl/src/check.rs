//! `meshctl check`: reads every service of the recorded mesh through its own `/admin/state`
//! and JetStream's consumer positions, checks the order flow's invariants
//! (`shop-invariants`) and prints the report; exits non-zero on any violation.

use std::path::Path;
use std::time::Duration;

use shop_invariants::Targets;
use time::OffsetDateTime;

use crate::error::{MeshError, Result};
use crate::state::MeshState;

/// Flags of `meshctl check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// How long something may be in flight before it counts as a violation (an order pending,
    /// an event unpublished, a capture without its confirmation), in seconds.
    #[arg(long, default_value_t = 60)]
    pub grace_secs: u64,
}

/// Checks the mesh in `state_dir`; returns whether it holds every invariant.
pub async fn check(state_dir: &Path, args: &CheckArgs) -> Result<bool> {
    let state = MeshState::running(state_dir)?;
    let targets = targets(&state);
    let snapshot = shop_invariants::collect(&targets)
        .await
        .map_err(|err| MeshError::Command {
            program: "check (reading the mesh's state)".into(),
            detail: chain(&err),
        })?;
    let grace = Duration::from_secs(args.grace_secs);
    let violations = shop_invariants::check(&snapshot, grace, OffsetDateTime::now_utc());
    print!("{}", shop_invariants::render(&snapshot, &violations));
    Ok(violations.is_empty())
}

/// The admin address of each service the checker reads, where the mesh runs it, and NATS.
pub fn targets(state: &MeshState) -> Targets {
    let admin = |name: &str| state.service(name).map(|s| s.admin_addr);
    Targets {
        orders: admin("orders"),
        inventory: admin("inventory"),
        payments: admin("payments"),
        shipping: admin("shipping"),
        nats_url: Some(format!("nats://127.0.0.1:{}", state.nats.port)),
        ..Targets::default()
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::loopback;
    use crate::state::{NatsState, PostgresState, ServiceState};

    fn service(name: &str, admin: u16) -> ServiceState {
        ServiceState {
            name: name.into(),
            pid: 1,
            grpc_addr: loopback(admin + 40_000),
            admin_addr: loopback(admin),
            binary: format!("/x/{name}").into(),
            log: format!("/x/{name}.log").into(),
            restarts: 0,
        }
    }

    #[test]
    fn targets_are_the_recorded_admin_ports_and_nats() {
        let state = MeshState {
            started_at: "2026-01-01T00:00:00Z".into(),
            supervisor_pid: None,
            postgres: PostgresState {
                pid: 1,
                port: 55432,
                bin_dir: "/x".into(),
                data_dir: "/x".into(),
            },
            nats: NatsState {
                pid: 2,
                port: 54222,
                binary: "/x/nats-server".into(),
            },
            services: vec![service("inventory", 9103), service("payments", 9105)],
            tls: None,
            traces: None,
        };
        let targets = targets(&state);
        assert_eq!(targets.inventory, Some(loopback(9103)));
        assert_eq!(targets.payments, Some(loopback(9105)));
        assert_eq!((targets.orders, targets.shipping), (None, None));
        assert_eq!(targets.nats_url.as_deref(), Some("nats://127.0.0.1:54222"));
    }
}
