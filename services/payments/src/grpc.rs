//! `shop.payments.v1.PaymentService` over [`Payments`]: request parsing and response wrapping.
//!
//! Field rules (uuids, key lengths, money ranges and currencies) are enforced by the runtime's
//! validation layer before these handlers run; what they check here is what the contract
//! cannot say (amounts in minor units, positive).

use shop_proto::common::Money;
use shop_proto::payments::{self as pb, payment_service_server::PaymentService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{Amount, RuleError};
use crate::error::PaymentsError;
use crate::service::{AuthorizeCommand, Payments};

/// The tonic service.
#[derive(Debug, Clone)]
pub struct PaymentsGrpc {
    payments: Payments,
}

impl PaymentsGrpc {
    pub fn new(payments: Payments) -> Self {
        Self { payments }
    }
}

fn parse_id(field: &'static str, value: &str) -> Result<Uuid, PaymentsError> {
    Uuid::parse_str(value).map_err(|_| {
        RuleError::Invalid {
            field,
            reason: "must be a UUID".into(),
        }
        .into()
    })
}

fn amount(money: Option<&Money>) -> Result<Amount, PaymentsError> {
    let money = money.ok_or_else(|| RuleError::Invalid {
        field: "amount",
        reason: "is required".into(),
    })?;
    Ok(Amount::from_parts(
        "amount",
        money.units,
        money.nanos,
        &money.currency_code,
    )?)
}

#[tonic::async_trait]
impl PaymentService for PaymentsGrpc {
    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let r = request.into_inner();
        let command = AuthorizeCommand {
            order_id: parse_id("order_id", &r.order_id)?,
            customer_id: parse_id("customer_id", &r.customer_id)?,
            amount: amount(r.amount.as_ref())?,
            key: r.idempotency_key,
            token: r.payment_method_token,
        };
        let payment = self.payments.authorize(command).await?;
        Ok(Response::new(pb::AuthorizeResponse {
            payment: Some(payment),
        }))
    }

    async fn capture(
        &self,
        request: Request<pb::CaptureRequest>,
    ) -> Result<Response<pb::CaptureResponse>, Status> {
        let r = request.into_inner();
        let id = parse_id("payment_id", &r.payment_id)?;
        let amount = amount(r.amount.as_ref())?;
        let payment = self
            .payments
            .capture(&r.idempotency_key, id, amount)
            .await?;
        Ok(Response::new(pb::CaptureResponse {
            payment: Some(payment),
        }))
    }

    async fn void(
        &self,
        request: Request<pb::VoidRequest>,
    ) -> Result<Response<pb::VoidResponse>, Status> {
        let r = request.into_inner();
        let id = parse_id("payment_id", &r.payment_id)?;
        let payment = self.payments.void(&r.idempotency_key, id).await?;
        Ok(Response::new(pb::VoidResponse {
            payment: Some(payment),
        }))
    }

    async fn refund(
        &self,
        request: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::RefundResponse>, Status> {
        let r = request.into_inner();
        let id = parse_id("payment_id", &r.payment_id)?;
        let amount = amount(r.amount.as_ref())?;
        let payment = self
            .payments
            .refund(&r.idempotency_key, id, amount, r.reason)
            .await?;
        Ok(Response::new(pb::RefundResponse {
            payment: Some(payment),
        }))
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let id = parse_id("payment_id", &request.get_ref().payment_id)?;
        let payment = self.payments.get(id).await?;
        Ok(Response::new(pb::GetPaymentResponse {
            payment: Some(payment),
        }))
    }
}
