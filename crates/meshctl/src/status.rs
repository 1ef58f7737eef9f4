//! `meshctl status`: is every process of the recorded mesh alive, serving and ready, and how are
//! the circuit breakers of its dependencies?

use std::path::Path;

use crate::error::Result;
use crate::processes::{is_alive, is_running};
use crate::state::{MeshState, ServiceState};
use crate::{nats, probe, table};

/// One row of the status table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Process name.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Whether the pid runs the recorded program.
    pub alive: bool,
    /// `grpc.health.v1` overall status, or how the check failed ("-" where not applicable).
    pub health: String,
    /// `/readyz` status code, or how the check failed ("-" where not applicable).
    pub ready: String,
    /// The circuit breakers of the service's dependencies, `name=state`; "-" for none, "?" if
    /// `/metrics` did not answer. An open breaker does not make the service down: it is the
    /// service protecting itself from a dependency that is.
    pub breakers: String,
    /// Whether this row counts as up.
    pub up: bool,
}

/// Prints the status table for the mesh in `state_dir`; returns whether everything is up.
pub async fn status(state_dir: &Path) -> Result<bool> {
    let state = MeshState::running(state_dir)?;
    let rows = check(&state).await;
    print!("{}", render(&rows));
    let all_up = rows.iter().all(|r| r.up);
    println!(
        "\nstarted {}; {}",
        state.started_at,
        if all_up {
            "everything is up"
        } else {
            "SOMETHING IS DOWN"
        }
    );
    Ok(all_up)
}

/// Probes every process of `state`.
pub async fn check(state: &MeshState) -> Vec<Row> {
    let pg_alive = is_alive(state.postgres.pid);
    let nats_alive = is_running(state.nats.pid, &state.nats.binary);
    let nats_greets = nats_alive && nats::greets(state.nats.port).await;
    let mut rows = vec![
        Row {
            name: "postgres".into(),
            pid: state.postgres.pid,
            alive: pg_alive,
            health: "-".into(),
            ready: "-".into(),
            breakers: "-".into(),
            up: pg_alive,
        },
        Row {
            name: "nats-server".into(),
            pid: state.nats.pid,
            alive: nats_alive,
            health: "-".into(),
            ready: if nats_greets {
                "JetStream"
            } else {
                "no answer"
            }
            .into(),
            breakers: "-".into(),
            up: nats_greets,
        },
    ];
    for service in &state.services {
        rows.push(check_service(service).await);
    }
    rows
}

async fn check_service(service: &ServiceState) -> Row {
    let alive = is_running(service.pid, &service.binary);
    let health = match probe::grpc_health(service.grpc_addr).await {
        Ok(status) => status,
        Err(_) => "unreachable".to_owned(),
    };
    let ready = probe::http_status(service.admin_addr, "/readyz").await;
    let breakers = match probe::breakers(service.admin_addr).await {
        None => "?".to_owned(),
        Some(breakers) if breakers.is_empty() => "-".to_owned(),
        Some(breakers) => breakers
            .iter()
            .map(|(dependency, state)| {
                let state = if state == "closed" {
                    state.clone()
                } else {
                    state.to_uppercase()
                };
                format!("{dependency}={state}")
            })
            .collect::<Vec<_>>()
            .join(" "),
    };
    Row {
        name: service.name.clone(),
        pid: service.pid,
        alive,
        breakers,
        up: alive && health == "SERVING" && ready == Some(200),
        health,
        ready: ready.map_or_else(|| "unreachable".to_owned(), |code| code.to_string()),
    }
}

/// The status table.
#[must_use]
pub fn render(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.pid.to_string(),
                if r.alive { "alive" } else { "gone" }.to_owned(),
                r.health.clone(),
                r.ready.clone(),
                if r.up { "up" } else { "DOWN" }.to_owned(),
                r.breakers.clone(),
            ]
        })
        .collect();
    table::render(
        &[
            "service",
            "pid",
            "process",
            "grpc health",
            "readyz",
            "state",
            "breakers",
        ],
        &cells,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_down_rows_visibly() {
        let rows = vec![Row {
            name: "catalog".into(),
            pid: 7,
            alive: false,
            health: "unreachable".into(),
            ready: "unreachable".into(),
            breakers: "payments=OPEN".into(),
            up: false,
        }];
        let text = render(&rows);
        assert!(text.lines().nth(2).unwrap().contains("gone"), "{text}");
        assert!(text.contains("DOWN"), "{text}");
        assert!(text.contains("payments=OPEN"), "{text}");
    }
}
