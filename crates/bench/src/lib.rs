//! The order-flow benchmark of the shop mesh.
//!
//! It runs against a mesh that `meshctl up --release` started and measures, in one run:
//! - the **order flow**: PlaceOrder at a fixed offered rate (open loop), each order followed
//!   with WatchOrder until it is CONFIRMED or CANCELLED; orders/s confirmed, p50/p99/max from
//!   the PlaceOrder call to the CONFIRMED message;
//! - the **ceilings** the flow stands under, on the same PostgreSQL and nats-server: single-row
//!   commits/s, bare unary gRPC calls/s (a tonic health server in this process), JetStream
//!   publishes/s acknowledged (the mesh's nats-server fsyncs every write:
//!   `sync_interval: always`);
//! - the **cost of an order**: commits (`pg_stat_database.xact_commit` of the services'
//!   databases), gRPC calls (`shop_grpc_server_handled_total` of every service) and events
//!   (messages added to the `SHOP_*` streams), each divided by the orders placed, after the
//!   same counters' idle rate (pollers, relays, sweepers) is taken off;
//! - **where the time goes**: CPU seconds per order of each process (PostgreSQL with its
//!   backends, nats-server, every service, the benchmark itself), from `/proc`, and how much
//!   of the machine's cores the run used.
//!
//! The figures are for `docs/benchmarks.md`; nothing here asserts a speed.
//!
//! # Layout
//! - `ceiling`: the three ceilings.
//! - `counters`: the mesh's counters, read before and after.
//! - `cpu`: CPU time per process, read before and after.
//! - `flow`: the order driver.
//! - `report`: percentiles and the printed table.

pub mod ceiling;
pub mod counters;
pub mod cpu;
pub mod flow;
pub mod report;
