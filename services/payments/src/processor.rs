//! The external processor as payments sees it: a trait, and its implementation over gRPC
//! through the service kit's resilient client (deadline, retries, bulkhead, breaker).
//!
//! Every call carries the payments idempotency key, so the client stack may retry it and the
//! processor applies it once. An error tells whether the outcome is unknown (the processor may
//! have applied it: timeouts, UNAVAILABLE) or certain (it refused).

use shop_proto::common::Money;
use shop_proto::processor::{
    self as pb, Decision, payment_processor_service_client::PaymentProcessorServiceClient,
};
use shop_runtime::client::ResilientChannel;
use tonic::Code;

use crate::domain::Amount;

/// What the processor answered for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The processor's charge id.
    pub reference: String,
    /// `None` when approved, else the decline reason.
    pub declined: Option<String>,
}

/// Why a processor call gave no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessorError {
    /// Down, too slow, or the answer was lost: it may or may not have applied the call.
    #[error("processor unreachable: {0}")]
    Unreachable(String),
    /// It refused the call; nothing was applied.
    #[error("processor refused: {0}")]
    Refused(String),
}

/// A card processor. Each method is idempotent by `key`.
#[tonic::async_trait]
pub trait PaymentProcessor: Send + Sync + 'static {
    /// Holds `amount` on the card `token`.
    async fn authorize(
        &self,
        key: &str,
        amount: &Amount,
        token: &str,
    ) -> Result<Outcome, ProcessorError>;
    /// Charges `amount` of the charge `reference`.
    async fn capture(
        &self,
        key: &str,
        reference: &str,
        amount: &Amount,
    ) -> Result<Outcome, ProcessorError>;
    /// Releases the charge `reference`.
    async fn void(&self, key: &str, reference: &str) -> Result<Outcome, ProcessorError>;
    /// Returns `amount` of the charge `reference`.
    async fn refund(
        &self,
        key: &str,
        reference: &str,
        amount: &Amount,
    ) -> Result<Outcome, ProcessorError>;
    /// What the call sent with `key` did, `None` if it never reached the processor.
    async fn lookup(&self, key: &str) -> Result<Option<Outcome>, ProcessorError>;
}

/// [`PaymentProcessor`] over `shop.processor.v1.PaymentProcessorService`.
#[derive(Debug, Clone)]
pub struct GrpcProcessor {
    client: PaymentProcessorServiceClient<ResilientChannel>,
}

impl GrpcProcessor {
    pub fn new(channel: ResilientChannel) -> Self {
        Self {
            client: PaymentProcessorServiceClient::new(channel),
        }
    }
}

fn money(amount: &Amount) -> Money {
    let (units, nanos) = Amount::parts(amount.minor, &amount.currency);
    Money {
        units,
        nanos,
        currency_code: amount.currency.clone(),
    }
}

fn classify(status: &tonic::Status) -> ProcessorError {
    let text = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        // The call may have reached the processor and been applied.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal
        | Code::ResourceExhausted
        | Code::Aborted => ProcessorError::Unreachable(text),
        _ => ProcessorError::Refused(text),
    }
}

fn outcome(result: Option<pb::OperationResult>) -> Result<Outcome, ProcessorError> {
    let result = result.ok_or_else(|| ProcessorError::Refused("answer without a result".into()))?;
    Ok(to_outcome(result))
}

fn to_outcome(result: pb::OperationResult) -> Outcome {
    let declined = (result.decision != Decision::Approved as i32).then_some(result.decline_reason);
    Outcome {
        reference: result.reference,
        declined,
    }
}

#[tonic::async_trait]
impl PaymentProcessor for GrpcProcessor {
    async fn authorize(
        &self,
        key: &str,
        amount: &Amount,
        token: &str,
    ) -> Result<Outcome, ProcessorError> {
        let request = pb::AuthorizeRequest {
            idempotency_key: key.to_owned(),
            amount: Some(money(amount)),
            card_token: token.to_owned(),
        };
        let response = self.client.clone().authorize(request).await;
        outcome(response.map_err(|s| classify(&s))?.into_inner().result)
    }

    async fn capture(
        &self,
        key: &str,
        reference: &str,
        amount: &Amount,
    ) -> Result<Outcome, ProcessorError> {
        let request = pb::CaptureRequest {
            idempotency_key: key.to_owned(),
            reference: reference.to_owned(),
            amount: Some(money(amount)),
        };
        let response = self.client.clone().capture(request).await;
        outcome(response.map_err(|s| classify(&s))?.into_inner().result)
    }

    async fn void(&self, key: &str, reference: &str) -> Result<Outcome, ProcessorError> {
        let request = pb::VoidRequest {
            idempotency_key: key.to_owned(),
            reference: reference.to_owned(),
        };
        let response = self.client.clone().void(request).await;
        outcome(response.map_err(|s| classify(&s))?.into_inner().result)
    }

    async fn refund(
        &self,
        key: &str,
        reference: &str,
        amount: &Amount,
    ) -> Result<Outcome, ProcessorError> {
        let request = pb::RefundRequest {
            idempotency_key: key.to_owned(),
            reference: reference.to_owned(),
            amount: Some(money(amount)),
        };
        let response = self.client.clone().refund(request).await;
        outcome(response.map_err(|s| classify(&s))?.into_inner().result)
    }

    async fn lookup(&self, key: &str) -> Result<Option<Outcome>, ProcessorError> {
        let request = pb::LookupRequest {
            idempotency_key: key.to_owned(),
        };
        let response = self.client.clone().lookup(request).await;
        Ok(response
            .map_err(|s| classify(&s))?
            .into_inner()
            .result
            .map(to_outcome))
    }
}
