//! The services meshctl runs: one table, the port overrides, and the environment each gets.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::error::{MeshError, Result};

/// Seconds a service gets to finish in-flight calls after SIGTERM (`SHUTDOWN_GRACE_SECS`).
pub const SHUTDOWN_GRACE_SECS: u64 = 10;

/// One service of the mesh: its package/binary name, local ports and what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Package and binary name (`services/<name>`); also its database name.
    pub name: &'static str,
    /// Local gRPC port (the gateway's HTTP port).
    pub grpc_port: u16,
    /// Local admin HTTP port (`/livez`, `/readyz`, `/metrics`).
    pub admin_port: u16,
    /// Owns a PostgreSQL database named after it (`DATABASE_URL`).
    pub database: bool,
    /// Publishes or consumes events (`NATS_URL`).
    pub nats: bool,
}

impl ServiceSpec {
    /// A service on these ports that needs neither a database nor NATS.
    #[must_use]
    pub const fn new(name: &'static str, grpc_port: u16, admin_port: u16) -> Self {
        Self {
            name,
            grpc_port,
            admin_port,
            database: false,
            nats: false,
        }
    }

    /// Gives the service its own database.
    #[must_use]
    pub const fn with_database(self) -> Self {
        Self {
            database: true,
            ..self
        }
    }

    /// Connects the service to NATS.
    #[must_use]
    pub const fn with_nats(self) -> Self {
        Self { nats: true, ..self }
    }
}

/// Every service of the mesh, in start order (the local port plan of the shared conventions).
///
/// A row whose package is not in the workspace yet is skipped with a note, so adding a service
/// is one line here once its crate exists.
pub const SERVICES: &[ServiceSpec] = &[
    ServiceSpec::new("identity", 50051, 9101)
        .with_database()
        .with_nats(),
    ServiceSpec::new("catalog", 50052, 9102)
        .with_database()
        .with_nats(),
    ServiceSpec::new("inventory", 50053, 9103)
        .with_database()
        .with_nats(),
    ServiceSpec::new("notifications", 50057, 9107)
        .with_database()
        .with_nats(),
    // Before payments, which calls it.
    PAYMENT_PROCESSOR,
    ServiceSpec::new("payments", 50055, 9105)
        .with_database()
        .with_nats(),
    // After the three it calls (catalog, inventory, payments): see `upstream_env`.
    ServiceSpec::new("orders", 50054, 9104)
        .with_database()
        .with_nats(),
    ServiceSpec::new("shipping", 50056, 9106)
        .with_database()
        .with_nats(),
    // The gateway serves HTTP on its "gRPC" port and will need the upstream addresses in
    // `service_env` (it owns no database):
    // ServiceSpec::new("gateway", 8080, 9108),
];

/// The simulated card processor payments calls (`PROCESSOR_URL`); no database, no NATS.
pub const PAYMENT_PROCESSOR: ServiceSpec = ServiceSpec::new("payment-processor", 50059, 9109);

/// A service with the addresses it will listen on in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedService {
    /// The table row.
    pub spec: ServiceSpec,
    /// `GRPC_ADDR`.
    pub grpc_addr: SocketAddr,
    /// `ADMIN_ADDR`.
    pub admin_addr: SocketAddr,
}

/// Where the shared infrastructure listens, for [`service_env`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Infra {
    /// PostgreSQL's port on 127.0.0.1.
    pub pg_port: u16,
    /// nats-server's client port on 127.0.0.1.
    pub nats_port: u16,
    /// `RUST_LOG` for every service.
    pub rust_log: String,
    /// gRPC address of every service of this run, for the `<UPSTREAM>_URL`s of their callers.
    pub peers: BTreeMap<&'static str, SocketAddr>,
    /// The directory with every service's `<name>.crt`/`<name>.key` and `ca.crt`; `None` for
    /// a plaintext mesh.
    pub certs: Option<std::path::PathBuf>,
    /// Identity's `SIGNING_KEY_KEK` (base64), which seals its signing keys at rest.
    pub identity_kek: Option<String>,
    /// meshctl's trace receiver, where every service exports its spans; `None`: no traces.
    pub otlp: Option<SocketAddr>,
    /// `LOG_FORMAT` of every service (`text` or `json`).
    pub log_format: &'static str,
}

/// A `--port NAME=GRPC:ADMIN` override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortOverride {
    /// The service.
    pub name: &'static str,
    /// Its gRPC port.
    pub grpc: u16,
    /// Its admin port.
    pub admin: u16,
}

/// Parses `NAME=GRPC:ADMIN` for a service in [`SERVICES`].
pub fn parse_port_override(text: &str) -> Result<PortOverride> {
    let bad = |why: &str| MeshError::Usage(format!("--port {text:?}: {why} (NAME=GRPC:ADMIN)"));
    let (name, ports) = text.split_once('=').ok_or_else(|| bad("no `=`"))?;
    let spec = SERVICES
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| bad("unknown service"))?;
    let (grpc, admin) = ports.split_once(':').ok_or_else(|| bad("no `:`"))?;
    let port = |p: &str| p.parse::<u16>().map_err(|_| bad("not a port number"));
    Ok(PortOverride {
        name: spec.name,
        grpc: port(grpc)?,
        admin: port(admin)?,
    })
}

/// The services to run: those of `specs` for which `exists` holds, on their table ports unless
/// overridden.
pub fn plan(
    specs: &[ServiceSpec],
    overrides: &[PortOverride],
    exists: impl Fn(&str) -> bool,
) -> Vec<PlannedService> {
    let overrides: BTreeMap<_, _> = overrides.iter().map(|o| (o.name, *o)).collect();
    specs
        .iter()
        .filter(|spec| exists(spec.name))
        .map(|spec| {
            let (grpc, admin) = overrides
                .get(spec.name)
                .map_or((spec.grpc_port, spec.admin_port), |o| (o.grpc, o.admin));
            PlannedService {
                spec: *spec,
                grpc_addr: loopback(grpc),
                admin_addr: loopback(admin),
            }
        })
        .collect()
}

/// `127.0.0.1:port`.
#[must_use]
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The environment a service process starts with (the variables `shop-runtime` reads).
#[must_use]
pub fn service_env(service: &PlannedService, infra: &Infra) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("GRPC_ADDR", service.grpc_addr.to_string()),
        ("ADMIN_ADDR", service.admin_addr.to_string()),
        ("RUST_LOG", infra.rust_log.clone()),
        ("LOG_FORMAT", infra.log_format.to_owned()),
        // The output goes to a log file: no terminal colour codes in it.
        ("NO_COLOR", "1".to_owned()),
        // Nothing routes around a local process, so there is nothing to drain for.
        ("SHUTDOWN_DRAIN_SECS", "0".to_owned()),
        ("SHUTDOWN_GRACE_SECS", SHUTDOWN_GRACE_SECS.to_string()),
    ];
    if service.spec.database {
        env.push((
            "DATABASE_URL",
            database_url(infra.pg_port, service.spec.name),
        ));
        env.push(("MIGRATE_ON_START", "true".to_owned()));
    }
    if let Some(receiver) = infra.otlp {
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{receiver}")));
        // Spans show in `meshctl trace` a moment after they end, not after the SDK's 5 s.
        env.push(("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()));
    }
    if service.spec.nats {
        env.push(("NATS_URL", format!("nats://127.0.0.1:{}", infra.nats_port)));
    }
    if let Some(dir) = &infra.certs {
        let name = service.spec.name;
        let path = |file: String| dir.join(file).display().to_string();
        env.push(("TLS_CERT_FILE", path(format!("{name}.crt"))));
        env.push(("TLS_KEY_FILE", path(format!("{name}.key"))));
        env.push(("TLS_CA_FILE", path("ca.crt".to_owned())));
    }
    for (variable, upstream) in upstreams(service.spec.name) {
        env.push((variable, format!("http://{}", peer_addr(infra, upstream))));
    }
    // Every service verifies user tokens with identity's published keys (identity its own).
    env.push((
        "IDENTITY_URL",
        format!("http://{}", peer_addr(infra, "identity")),
    ));
    if let (Some(kek), "identity") = (&infra.identity_kek, service.spec.name) {
        env.push(("SIGNING_KEY_KEK", kek.clone()));
    }
    if service.spec.name == "shipping" {
        // A parcel that is picked up after 1 s and delivered 2 s later keeps `demo` short.
        env.push((
            "SHIPPING_PICKUP_DELAY_SECS",
            SHIPPING_PICKUP_DELAY_SECS.to_owned(),
        ));
        env.push((
            "SHIPPING_DELIVERY_DELAY_SECS",
            SHIPPING_DELIVERY_DELAY_SECS.to_owned(),
        ));
    }
    env
}

/// Shipping's simulated pickup delay in the local mesh (its default is 2 s).
pub const SHIPPING_PICKUP_DELAY_SECS: &str = "1";
/// Shipping's simulated delivery delay in the local mesh (its default is 5 s).
pub const SHIPPING_DELIVERY_DELAY_SECS: &str = "2";

/// The services `name` calls: `(<UPSTREAM>_URL variable, upstream service)`.
#[must_use]
pub fn upstreams(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "payments" => &[("PROCESSOR_URL", PAYMENT_PROCESSOR.name)],
        "orders" => &[
            ("CATALOG_URL", "catalog"),
            ("INVENTORY_URL", "inventory"),
            ("PAYMENTS_URL", "payments"),
        ],
        _ => &[],
    }
}

/// Where `name` listens in this run: its planned address, else its table port.
fn peer_addr(infra: &Infra, name: &str) -> SocketAddr {
    infra.peers.get(name).copied().unwrap_or_else(|| {
        let port = SERVICES
            .iter()
            .chain([&PAYMENT_PROCESSOR])
            .find(|spec| spec.name == name)
            .map_or(0, |spec| spec.grpc_port);
        loopback(port)
    })
}

/// URL of database `name` on the mesh's PostgreSQL.
#[must_use]
pub fn database_url(pg_port: u16, name: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{pg_port}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infra() -> Infra {
        Infra {
            pg_port: 55432,
            nats_port: 54222,
            rust_log: "info".into(),
            peers: BTreeMap::new(),
            certs: None,
            identity_kek: Some("a2VrCg==".into()),
            otlp: None,
            log_format: "text",
        }
    }

    #[test]
    fn with_a_receiver_every_service_exports_its_spans_there() {
        let planned = plan(SERVICES, &[], |name| name == "catalog");
        let env: BTreeMap<_, _> = service_env(&planned[0], &infra()).into_iter().collect();
        assert!(!env.contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let traced = Infra {
            otlp: Some(loopback(54317)),
            log_format: "json",
            ..infra()
        };
        let env: BTreeMap<_, _> = service_env(&planned[0], &traced).into_iter().collect();
        assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://127.0.0.1:54317");
        assert_eq!(env["LOG_FORMAT"], "json");
    }

    #[test]
    fn table_names_are_valid_database_names_and_ports_unique() {
        let mut ports = std::collections::HashSet::new();
        for spec in SERVICES {
            // A hyphen is fine in a name that is never a database name.
            assert!(
                spec.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || (c == '-' && !spec.database)),
                "{}",
                spec.name
            );
            assert!(ports.insert(spec.grpc_port) && ports.insert(spec.admin_port));
        }
    }

    #[test]
    fn env_for_a_service_with_database_and_nats() {
        let planned = plan(SERVICES, &[], |name| name == "identity");
        assert_eq!(planned.len(), 1);
        let env: BTreeMap<_, _> = service_env(&planned[0], &infra()).into_iter().collect();
        assert_eq!(env["GRPC_ADDR"], "127.0.0.1:50051");
        assert_eq!(env["ADMIN_ADDR"], "127.0.0.1:9101");
        assert_eq!(
            env["DATABASE_URL"],
            "postgres://postgres@127.0.0.1:55432/identity"
        );
        assert_eq!(env["NATS_URL"], "nats://127.0.0.1:54222");
        assert_eq!(env["SHUTDOWN_DRAIN_SECS"], "0");
        assert_eq!(env["RUST_LOG"], "info");
        assert_eq!(
            env["SIGNING_KEY_KEK"], "a2VrCg==",
            "identity seals its keys"
        );
    }

    #[test]
    fn payments_is_pointed_at_the_processor() {
        let planned = plan(SERVICES, &[], |name| name.starts_with("payment"));
        assert_eq!(
            planned[0].spec, PAYMENT_PROCESSOR,
            "the processor starts first"
        );
        let env: BTreeMap<_, _> = service_env(&planned[1], &infra()).into_iter().collect();
        assert_eq!(env["GRPC_ADDR"], "127.0.0.1:50055");
        assert_eq!(env["PROCESSOR_URL"], "http://127.0.0.1:50059");
        assert!(
            !env.contains_key("SIGNING_KEY_KEK"),
            "only identity gets the KEK"
        );
        assert_eq!(
            env["DATABASE_URL"],
            "postgres://postgres@127.0.0.1:55432/payments"
        );
        let env: BTreeMap<_, _> = service_env(&planned[0], &infra()).into_iter().collect();
        assert!(!env.contains_key("DATABASE_URL") && !env.contains_key("PROCESSOR_URL"));

        // A port override of the processor is followed.
        let ov = parse_port_override("payment-processor=4200:4201").unwrap();
        let planned = plan(SERVICES, &[ov], |name| name.starts_with("payment"));
        let infra = Infra {
            peers: planned.iter().map(|p| (p.spec.name, p.grpc_addr)).collect(),
            certs: None,
            ..infra()
        };
        let env: BTreeMap<_, _> = service_env(&planned[1], &infra).into_iter().collect();
        assert_eq!(env["PROCESSOR_URL"], "http://127.0.0.1:4200");
    }

    #[test]
    fn orders_is_pointed_at_catalog_inventory_and_payments_of_this_run() {
        let overrides = [
            parse_port_override("catalog=4300:4301").unwrap(),
            parse_port_override("inventory=4302:4303").unwrap(),
            parse_port_override("payments=4304:4305").unwrap(),
            parse_port_override("orders=4306:4307").unwrap(),
        ];
        let planned = plan(SERVICES, &overrides, |_| true);
        let this_run = Infra {
            peers: planned.iter().map(|p| (p.spec.name, p.grpc_addr)).collect(),
            certs: None,
            ..infra()
        };
        let orders = planned.iter().find(|p| p.spec.name == "orders").unwrap();
        let env: BTreeMap<_, _> = service_env(orders, &this_run).into_iter().collect();
        assert_eq!(env["GRPC_ADDR"], "127.0.0.1:4306");
        assert_eq!(env["ADMIN_ADDR"], "127.0.0.1:4307");
        assert_eq!(env["CATALOG_URL"], "http://127.0.0.1:4300");
        assert_eq!(env["INVENTORY_URL"], "http://127.0.0.1:4302");
        assert_eq!(env["PAYMENTS_URL"], "http://127.0.0.1:4304");
        assert_eq!(
            env["DATABASE_URL"],
            "postgres://postgres@127.0.0.1:55432/orders"
        );
        assert_eq!(env["MIGRATE_ON_START"], "true");
        assert_eq!(env["NATS_URL"], "nats://127.0.0.1:54222");
        assert!(!env.contains_key("PROCESSOR_URL"));

        // Without peers in this run, the table ports.
        let env: BTreeMap<_, _> = service_env(orders, &infra()).into_iter().collect();
        assert_eq!(env["CATALOG_URL"], "http://127.0.0.1:50052");
        assert_eq!(env["PAYMENTS_URL"], "http://127.0.0.1:50055");
    }

    #[test]
    fn shipping_gets_its_database_nats_and_short_delivery_delays() {
        let planned = plan(SERVICES, &[], |name| name == "shipping");
        let env: BTreeMap<_, _> = service_env(&planned[0], &infra()).into_iter().collect();
        assert_eq!(env["GRPC_ADDR"], "127.0.0.1:50056");
        assert_eq!(env["ADMIN_ADDR"], "127.0.0.1:9106");
        assert_eq!(
            env["DATABASE_URL"],
            "postgres://postgres@127.0.0.1:55432/shipping"
        );
        assert_eq!(env["NATS_URL"], "nats://127.0.0.1:54222");
        assert_eq!(env["SHIPPING_PICKUP_DELAY_SECS"], "1");
        assert_eq!(env["SHIPPING_DELIVERY_DELAY_SECS"], "2");
        // Its only upstream: identity, for the keys of user tokens.
        assert_eq!(env["IDENTITY_URL"], "http://127.0.0.1:50051");
        assert!(
            !env.keys().any(|k| k.ends_with("_URL")
                && !["DATABASE_URL", "NATS_URL", "IDENTITY_URL"].contains(k))
        );
    }

    #[test]
    fn orders_starts_after_what_it_calls() {
        let position = |name: &str| SERVICES.iter().position(|s| s.name == name).unwrap();
        for (_, upstream) in upstreams("orders") {
            assert!(position(upstream) < position("orders"), "{upstream}");
        }
    }

    #[test]
    fn env_leaves_out_what_a_service_does_not_use() {
        // Every service in the table uses NATS now (catalog publishes ProductPriceChanged).
        let database_only = [ServiceSpec::new("catalog", 50052, 9102).with_database()];
        let planned = plan(&database_only, &[], |_| true);
        let env: BTreeMap<_, _> = service_env(&planned[0], &infra()).into_iter().collect();
        assert!(env.contains_key("DATABASE_URL"));
        assert!(!env.contains_key("NATS_URL"));
        let planned = plan(SERVICES, &[], |name| name == "catalog");
        let env: BTreeMap<_, _> = service_env(&planned[0], &infra()).into_iter().collect();
        assert!(env.contains_key("NATS_URL"), "catalog publishes events");
    }

    #[test]
    fn port_overrides_apply_to_their_service_only() {
        let ov = parse_port_override("catalog=4100:4101").unwrap();
        let planned = plan(SERVICES, &[ov], |_| true);
        let catalog = planned.iter().find(|p| p.spec.name == "catalog").unwrap();
        assert_eq!(catalog.grpc_addr, loopback(4100));
        assert_eq!(catalog.admin_addr, loopback(4101));
        let identity = planned.iter().find(|p| p.spec.name == "identity").unwrap();
        assert_eq!(identity.grpc_addr, loopback(50051));
    }

    #[test]
    fn bad_port_overrides_are_rejected() {
        for bad in [
            "catalog",
            "nope=1:2",
            "catalog=1",
            "catalog=x:2",
            "catalog=1:70000",
        ] {
            assert!(parse_port_override(bad).is_err(), "{bad}");
        }
    }
}
