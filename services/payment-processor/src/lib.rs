//! A simulated external card processor, behind `shop.processor.v1.PaymentProcessorService`.
//!
//! It is the dependency the payments service's breaker, retries and reconciliation exist for:
//! latency, a transient failure rate, hard-down and declined card tokens are set at start
//! ([`config::BehaviorConfig`]) and changed at run time through
//! `shop.processor.v1.ProcessorAdminService`. State is in memory (it is a simulation), keyed by
//! the caller's idempotency key so a repeated key returns the first outcome.
//!
//! # Layout
//! - `config`: settings and the start-up behaviour.
//! - `sim`: charges, outcomes per key and the behaviour; no I/O.
//! - `grpc`: both tonic services, latency and failure injection.
//! - `error`: the one mapping to `tonic::Status`.

pub mod config;
mod error;
mod grpc;
mod sim;

use std::{future::Future, net::SocketAddr};

use shop_proto::processor::{
    payment_processor_service_server::PaymentProcessorServiceServer,
    processor_admin_service_server::ProcessorAdminServiceServer,
};
use shop_runtime::{GrpcServer, GrpcServerBuilder, RuntimeError};

pub use config::{Behavior, BehaviorConfig, Config};

/// A bound processor.
#[derive(Debug)]
pub struct App {
    server: GrpcServer,
}

impl App {
    /// Checks the behaviour and binds the listeners.
    pub async fn build(config: Config) -> Result<Self, RuntimeError> {
        let behavior = config.behavior.behavior()?;
        let service = grpc::ProcessorGrpc::new(sim::Simulation::new(behavior));
        let server = GrpcServerBuilder::new(config.server, shop_proto::FILE_DESCRIPTOR_SET)
            .add_service(PaymentProcessorServiceServer::new(service.clone()))
            .add_service(ProcessorAdminServiceServer::new(service))
            .bind()
            .await?;
        Ok(Self { server })
    }

    /// Where gRPC is served.
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.server.grpc_addr()
    }

    /// Where the admin HTTP server listens.
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.server.admin_addr()
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        self.server.run_until(shutdown).await
    }
}
