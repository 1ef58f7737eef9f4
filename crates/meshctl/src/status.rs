//! `meshctl status`: is every process of the recorded mesh alive, serving and ready, how are
//! the circuit breakers of its dependencies, and has its outbox relay parked events?

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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
    /// Outbox rows the service's relay parked (`shop_outbox_parked`): events the server kept
    /// refusing, waiting for an operator. "-" for no outbox, "?" if `/metrics` did not answer.
    pub outbox_parked: String,
    /// Whether this row counts as up.
    pub up: bool,
}

/// How long reading one `/metrics` page may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest `/metrics` page read.
const MAX_METRICS_BYTES: u64 = 4 << 20;

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
            outbox_parked: "-".into(),
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
            outbox_parked: "-".into(),
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
    let outbox_parked = match metrics_page(service.admin_addr).await {
        None => "?".to_owned(),
        Some(page) => parse_outbox_parked(&page).map_or_else(
            || "-".to_owned(),
            |n| {
                if n > 0 {
                    format!("{n} PARKED")
                } else {
                    n.to_string()
                }
            },
        ),
    };
    Row {
        name: service.name.clone(),
        pid: service.pid,
        alive,
        breakers,
        outbox_parked,
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
                r.outbox_parked.clone(),
                // Last: the widest, and scripts read it at the line's end.
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
            "outbox parked",
            "breakers",
        ],
        &cells,
    )
}

/// The body of `GET /metrics` on `admin` if it answered 200.
async fn metrics_page(admin: SocketAddr) -> Option<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(admin).await?;
        let request =
            format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream
            .take(MAX_METRICS_BYTES)
            .read_to_end(&mut answer)
            .await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()?
        .ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.lines().next()?.split_whitespace().nth(1)?;
    (status == "200").then_some(answer)
}

/// The value of `shop_outbox_parked` in a `/metrics` page; `None` if the service exports none.
fn parse_outbox_parked(metrics: &str) -> Option<i64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix("shop_outbox_parked ")?;
        // OpenMetrics may print a gauge as a float.
        value.trim().parse::<f64>().ok().map(|v| v as i64)
    })
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
            outbox_parked: "2 PARKED".into(),
            up: false,
        }];
        let text = render(&rows);
        assert!(text.lines().nth(2).unwrap().contains("gone"), "{text}");
        assert!(text.contains("DOWN"), "{text}");
        assert!(text.contains("payments=OPEN"), "{text}");
        assert!(text.contains("2 PARKED"), "{text}");
    }

    #[test]
    fn reads_parked_outbox_rows_from_metrics() {
        let page = "HTTP/1.0 200 OK\r\n\r\n# TYPE shop_outbox_parked gauge\n\
                    shop_outbox_parked 3\nshop_outbox_unpublished 0\n# EOF\n";
        assert_eq!(parse_outbox_parked(page), Some(3));
        assert_eq!(parse_outbox_parked("shop_grpc_server_in_flight 0\n"), None);
    }
}
