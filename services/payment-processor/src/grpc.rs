//! `shop.processor.v1.PaymentProcessorService` and `ProcessorAdminService` over the shared
//! [`Simulation`].
//!
//! Each money call is admitted (or failed) first, applied under the lock, and only then
//! delayed by the configured latency: a latency above the caller's timeout loses the answer
//! of an operation that did happen, which is what reconciliation by `Lookup` exists for.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shop_proto::processor::{
    self as pb, payment_processor_service_server::PaymentProcessorService,
    processor_admin_service_server::ProcessorAdminService,
};
use shop_runtime::status;
use tonic::{Request, Response, Status};

use crate::config::Behavior;
use crate::sim::{SimError, Simulation};

/// Both tonic services share one simulation.
#[derive(Debug, Clone)]
pub struct ProcessorGrpc {
    sim: Arc<Mutex<Simulation>>,
}

impl ProcessorGrpc {
    pub fn new(sim: Simulation) -> Self {
        Self {
            sim: Arc::new(Mutex::new(sim)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Simulation> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.sim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits the call, applies `op`, waits the latency, answers.
    async fn call<T>(
        &self,
        op: impl FnOnce(&mut Simulation) -> Result<T, SimError>,
    ) -> Result<T, Status> {
        let (result, latency) = {
            let mut sim = self.lock();
            let latency = sim.behavior().latency;
            let result = sim.admit(fastrand::f64()).and_then(|()| op(&mut sim));
            (result, latency)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        result.map_err(Status::from)
    }
}

fn money(amount: Option<shop_proto::common::Money>) -> Result<shop_proto::common::Money, Status> {
    // The validation layer requires it; this only keeps the handler total.
    amount.ok_or_else(|| status::invalid_argument("amount", "is required"))
}

#[tonic::async_trait]
impl PaymentProcessorService for ProcessorGrpc {
    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let r = request.into_inner();
        let amount = money(r.amount)?;
        let result = self
            .call(|sim| sim.authorize(&r.idempotency_key, amount, &r.card_token))
            .await?;
        Ok(Response::new(pb::AuthorizeResponse {
            result: Some(result),
        }))
    }

    async fn capture(
        &self,
        request: Request<pb::CaptureRequest>,
    ) -> Result<Response<pb::CaptureResponse>, Status> {
        let r = request.into_inner();
        let amount = money(r.amount)?;
        let result = self
            .call(|sim| sim.capture(&r.idempotency_key, &r.reference, amount))
            .await?;
        Ok(Response::new(pb::CaptureResponse {
            result: Some(result),
        }))
    }

    async fn void(
        &self,
        request: Request<pb::VoidRequest>,
    ) -> Result<Response<pb::VoidResponse>, Status> {
        let r = request.into_inner();
        let result = self
            .call(|sim| sim.void(&r.idempotency_key, &r.reference))
            .await?;
        Ok(Response::new(pb::VoidResponse {
            result: Some(result),
        }))
    }

    async fn refund(
        &self,
        request: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::RefundResponse>, Status> {
        let r = request.into_inner();
        let amount = money(r.amount)?;
        let result = self
            .call(|sim| sim.refund(&r.idempotency_key, &r.reference, amount))
            .await?;
        Ok(Response::new(pb::RefundResponse {
            result: Some(result),
        }))
    }

    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let key = request.into_inner().idempotency_key;
        let result = self.call(|sim| Ok(sim.lookup(&key))).await?;
        Ok(Response::new(pb::LookupResponse { result }))
    }
}

fn behavior_to_pb(behavior: &Behavior) -> pb::Behavior {
    pb::Behavior {
        latency: prost_types::Duration::try_from(behavior.latency).ok(),
        failure_rate: behavior.failure_rate,
        hard_down: behavior.hard_down,
        decline_tokens: behavior.decline_tokens.clone().into_iter().collect(),
    }
}

fn behavior_from_pb(behavior: pb::Behavior) -> Result<Behavior, Status> {
    let latency = match behavior.latency {
        None => Duration::ZERO,
        Some(d) => Duration::try_from(d)
            .map_err(|_| status::invalid_argument("behavior.latency", "must not be negative"))?,
    };
    Ok(Behavior {
        latency,
        failure_rate: behavior.failure_rate,
        hard_down: behavior.hard_down,
        decline_tokens: behavior.decline_tokens.into_iter().collect(),
    })
}

#[tonic::async_trait]
impl ProcessorAdminService for ProcessorGrpc {
    async fn set_behavior(
        &self,
        request: Request<pb::SetBehaviorRequest>,
    ) -> Result<Response<pb::SetBehaviorResponse>, Status> {
        let wanted = request
            .into_inner()
            .behavior
            .ok_or_else(|| status::invalid_argument("behavior", "is required"))?;
        let behavior = behavior_from_pb(wanted)?;
        tracing::info!(?behavior, "processor behaviour changed");
        let echoed = behavior_to_pb(&behavior);
        self.lock().set_behavior(behavior);
        Ok(Response::new(pb::SetBehaviorResponse {
            behavior: Some(echoed),
        }))
    }

    async fn get_behavior(
        &self,
        _request: Request<pb::GetBehaviorRequest>,
    ) -> Result<Response<pb::GetBehaviorResponse>, Status> {
        let sim = self.lock();
        Ok(Response::new(pb::GetBehaviorResponse {
            behavior: Some(behavior_to_pb(sim.behavior())),
            requests_total: sim.requests_total(),
        }))
    }

    async fn list_operations(
        &self,
        _request: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        Ok(Response::new(pb::ListOperationsResponse {
            operations: self.lock().operations(),
        }))
    }
}
