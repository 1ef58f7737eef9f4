//! `meshctl status`: is every process of the recorded mesh alive, serving and ready, how
//! often was it restarted, how are the circuit breakers of its dependencies, what is left to
//! publish in its outbox (`/admin/state`) or parked there (`/metrics`), how far behind are its
//! JetStream consumers and how many of their messages are dead letters; then orders' saga
//! counts by state and the stuck sagas.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use std::collections::BTreeMap;

use crate::admin::{self, Answer};
use crate::error::Result;
use crate::jetstream::{self, ConsumerLag};
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
    /// Restarts after unexpected exits ("-" for PostgreSQL and nats-server, never restarted).
    pub restarts: String,
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
    /// Outbox rows not yet published, from `/admin/state`; "-" where the service serves none.
    pub outbox_backlog: String,
    /// Messages its durable consumers have not acknowledged yet (pending + unacked), "-" for
    /// no consumer, "?" when JetStream did not answer.
    pub consumer_lag: String,
    /// Dead letters of its consumers in `SHOP_DLQ`; "?" when JetStream did not answer.
    pub dead_letters: String,
    /// Whether this row counts as up.
    pub up: bool,
}

/// What JetStream says about every service's consumers; `None` where it did not answer.
#[derive(Debug, Default)]
struct StreamFacts {
    lag: Option<BTreeMap<String, ConsumerLag>>,
    dead_letters: Option<BTreeMap<String, u64>>,
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
    let supervised = match state.supervisor_pid {
        Some(pid) if is_running(pid, Path::new("meshctl")) => {
            println!("\nsupervisor: pid {pid} (restarts services that exit)");
            true
        }
        Some(pid) => {
            println!("\nsupervisor: pid {pid} is GONE; a service that exits stays down");
            false
        }
        None => {
            println!("\nsupervisor: none recorded; a service that exits stays down");
            false
        }
    };
    let all_up = supervised && rows.iter().all(|r| r.up);
    if let Some(orders) = state.service("orders") {
        println!("{}", render_sagas(&admin::state(orders.admin_addr).await));
    }
    println!(
        "started {}; {}",
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
            restarts: "-".into(),
            health: "-".into(),
            ready: "-".into(),
            breakers: "-".into(),
            outbox_parked: "-".into(),
            outbox_backlog: "-".into(),
            consumer_lag: "-".into(),
            dead_letters: "-".into(),
            up: pg_alive,
        },
        Row {
            name: "nats-server".into(),
            pid: state.nats.pid,
            alive: nats_alive,
            restarts: "-".into(),
            health: "-".into(),
            ready: if nats_greets {
                "JetStream"
            } else {
                "no answer"
            }
            .into(),
            breakers: "-".into(),
            outbox_parked: "-".into(),
            outbox_backlog: "-".into(),
            consumer_lag: "-".into(),
            dead_letters: "-".into(),
            up: nats_greets,
        },
    ];
    let facts = if nats_greets {
        stream_facts(state.nats.port).await
    } else {
        StreamFacts::default()
    };
    for service in &state.services {
        rows.push(check_service(state, service, &facts).await);
    }
    rows
}

async fn stream_facts(port: u16) -> StreamFacts {
    let Ok(js) = jetstream::connect(port).await else {
        return StreamFacts::default();
    };
    StreamFacts {
        lag: jetstream::consumer_lag(&js).await.ok(),
        dead_letters: jetstream::dead_letters(&js).await.ok(),
    }
}

async fn check_service(state: &MeshState, service: &ServiceState, facts: &StreamFacts) -> Row {
    let alive = is_running(service.pid, &service.binary);
    let health = match state.channel_to(service) {
        Ok(channel) => probe::grpc_health(channel)
            .await
            .unwrap_or_else(|_| "unreachable".to_owned()),
        Err(_) => "no certificate".to_owned(),
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
    let outbox_backlog = match admin::state(service.admin_addr).await {
        Answer::Served(state) => state
            .outbox
            .map_or_else(|| "-".to_owned(), |outbox| outbox.unpublished.to_string()),
        Answer::NotFound => "-".to_owned(),
        Answer::Failed(_) => "?".to_owned(),
    };
    let consumer_lag = facts.lag.as_ref().map_or_else(
        || "?".to_owned(),
        |lag| {
            lag.get(&service.name)
                .map_or_else(|| "-".to_owned(), |l| (l.pending + l.unacked).to_string())
        },
    );
    let dead_letters = facts.dead_letters.as_ref().map_or_else(
        || "?".to_owned(),
        |counts| match counts.get(&service.name) {
            Some(&n) if n > 0 => format!("{n} DEAD"),
            _ => "0".to_owned(),
        },
    );
    Row {
        name: service.name.clone(),
        pid: service.pid,
        alive,
        outbox_backlog,
        consumer_lag,
        dead_letters,
        restarts: service.restarts.to_string(),
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
                r.restarts.clone(),
                r.health.clone(),
                r.ready.clone(),
                if r.up { "up" } else { "DOWN" }.to_owned(),
                r.outbox_backlog.clone(),
                r.outbox_parked.clone(),
                r.consumer_lag.clone(),
                r.dead_letters.clone(),
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
            "restarts",
            "grpc health",
            "readyz",
            "state",
            "outbox",
            "parked",
            "lag",
            "dlq",
            "breakers",
        ],
        &cells,
    )
}

/// Orders' saga counts by state, then each stuck saga with its error.
fn render_sagas(answer: &Answer<admin::AdminState>) -> String {
    let sagas = match answer {
        Answer::Served(state) => state.sagas.clone(),
        Answer::NotFound => None,
        Answer::Failed(why) => return format!("orders sagas: ? ({why})"),
    };
    let Some(sagas) = sagas else {
        return "orders sagas: - (no saga state in /admin/state)".to_owned();
    };
    const STATES: [&str; 5] = [
        "running",
        "completed",
        "compensating",
        "compensated",
        "stuck",
    ];
    // The five states always, in the saga's order, then any other state orders reports.
    let others = sagas
        .counts
        .keys()
        .filter(|k| !STATES.contains(&k.as_str()));
    let counts: Vec<String> = STATES
        .iter()
        .map(|state| (*state).to_owned())
        .chain(others.cloned())
        .map(|state| {
            let n = sagas.counts.get(&state).copied().unwrap_or_default();
            format!("{state} {n}")
        })
        .collect();
    let mut text = format!("orders sagas: {}", counts.join(", "));
    for stuck in &sagas.stuck {
        text.push_str(&format!(
            "\n  STUCK {}: {}",
            stuck.id,
            stuck.error.as_deref().unwrap_or("(no error recorded)")
        ));
    }
    text
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
            restarts: "3".into(),
            health: "unreachable".into(),
            ready: "unreachable".into(),
            breakers: "payments=OPEN".into(),
            outbox_parked: "2 PARKED".into(),
            outbox_backlog: "5".into(),
            consumer_lag: "7".into(),
            dead_letters: "1 DEAD".into(),
            up: false,
        }];
        let text = render(&rows);
        assert!(text.lines().nth(2).unwrap().contains("gone"), "{text}");
        assert!(text.contains("DOWN"), "{text}");
        assert!(text.contains("payments=OPEN"), "{text}");
        assert!(text.contains("2 PARKED"), "{text}");
        assert!(text.contains("1 DEAD"), "{text}");
        let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "service", "pid", "process", "restarts", "grpc", "health", "readyz", "state",
                "outbox", "parked", "lag", "dlq", "breakers"
            ]
        );
    }

    #[test]
    fn renders_saga_counts_and_stuck_sagas() {
        let state = admin::AdminState {
            sagas: Some(admin::SagaSummary {
                counts: [
                    ("completed".to_owned(), 3),
                    ("stuck".to_owned(), 1),
                    ("paused".to_owned(), 2),
                ]
                .into(),
                stuck: vec![admin::StuckSaga {
                    id: "s-1".into(),
                    error: Some("payments unavailable".into()),
                }],
            }),
            outbox: None,
        };
        let text = render_sagas(&Answer::Served(state));
        assert!(
            text.starts_with(
                "orders sagas: running 0, completed 3, compensating 0, compensated 0, stuck 1, \
                 paused 2"
            ),
            "{text}"
        );
        assert!(text.contains("STUCK s-1: payments unavailable"), "{text}");
        assert!(render_sagas(&Answer::Failed("no answer".into())).contains('?'));
    }

    #[test]
    fn reads_parked_outbox_rows_from_metrics() {
        let page = "HTTP/1.0 200 OK\r\n\r\n# TYPE shop_outbox_parked gauge\n\
                    shop_outbox_parked 3\nshop_outbox_unpublished 0\n# EOF\n";
        assert_eq!(parse_outbox_parked(page), Some(3));
        assert_eq!(parse_outbox_parked("shop_grpc_server_in_flight 0\n"), None);
    }
}
