//! The payment operations: idempotency by key, the processor call, reconciliation, and the
//! write of the outcome.
//!
//! Every mutating call goes the same way:
//! 1. A key seen before with another request is refused; one answered before returns that
//!    answer; one left pending (the processor's outcome was unknown) is resumed.
//! 2. A new key is checked against the payment's state, then claimed (pending). At most one
//!    key per payment is pending, so two operations never race at the processor.
//! 3. The processor is called with the key. When its answer is unknown (timeout, UNAVAILABLE)
//!    payments asks it (`lookup`) what the key did before anything is sent again, so a capture
//!    whose answer was lost is recorded, never repeated.
//! 4. The payment, its ledger entry, its event and the answer commit in one transaction.

use std::future::Future;
use std::sync::Arc;

use prost::Message as _;
use shop_proto::payments as pb;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::convert::payment_to_pb;
use crate::domain::{Amount, Payment, Status};
use crate::error::PaymentsError;
use crate::processor::{Outcome, PaymentProcessor, ProcessorError};
use crate::store::{Claim, KeyRow, Operation, PgPaymentStore, Transition};

/// An authorization as asked for.
#[derive(Debug, Clone)]
pub struct AuthorizeCommand {
    pub key: String,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount: Amount,
    pub token: String,
}

/// Where a key stands before the processor is called.
enum Start {
    /// Answered before: return this.
    Answered(Box<pb::Payment>),
    /// Claimed now, or pending from an earlier call (`resumed`).
    Go { payment_id: Uuid, resumed: bool },
}

/// The payment operations over the store and the processor.
#[derive(Clone)]
pub struct Payments {
    store: PgPaymentStore,
    processor: Arc<dyn PaymentProcessor>,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Now, at the microsecond precision PostgreSQL keeps, so a stored answer and a later read
/// agree.
fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

impl Payments {
    pub fn new(store: PgPaymentStore, processor: Arc<dyn PaymentProcessor>) -> Self {
        Self { store, processor }
    }

    pub async fn get(&self, id: Uuid) -> Result<pb::Payment, PaymentsError> {
        Ok(payment_to_pb(&self.store.get_payment(id).await?))
    }

    pub async fn authorize(&self, cmd: AuthorizeCommand) -> Result<pb::Payment, PaymentsError> {
        let request = format!(
            "{}|{}|{}|{}|{}",
            cmd.order_id, cmd.customer_id, cmd.amount.minor, cmd.amount.currency, cmd.token
        );
        let key = cmd.key.as_str();
        let (payment_id, resumed) = match self
            .start(key, Operation::Authorize, &request, Uuid::now_v7(), || {
                Ok(())
            })
            .await?
        {
            Start::Answered(answer) => return Ok(*answer),
            Start::Go {
                payment_id,
                resumed,
            } => (payment_id, resumed),
        };
        let outcome = self
            .reach(key, resumed, || {
                self.processor.authorize(key, &cmd.amount, &cmd.token)
            })
            .await?;
        let at = now();
        let (status, transition) = match outcome.declined {
            None => (Status::Authorized, Transition::Authorized),
            Some(_) => (Status::Declined, Transition::Declined),
        };
        let payment = Payment {
            id: payment_id,
            order_id: cmd.order_id,
            customer_id: cmd.customer_id,
            status,
            currency: cmd.amount.currency.clone(),
            authorized_minor: cmd.amount.minor,
            captured_minor: 0,
            refunded_minor: 0,
            processor_reference: outcome.reference,
            failure_reason: outcome.declined.unwrap_or_default(),
            created_at: at,
            updated_at: at,
        };
        self.finish(key, &payment, &transition).await
    }

    pub async fn capture(
        &self,
        key: &str,
        payment_id: Uuid,
        amount: Amount,
    ) -> Result<pb::Payment, PaymentsError> {
        let request = format!("{payment_id}|{}|{}", amount.minor, amount.currency);
        let payment = self.store.get_payment(payment_id).await;
        let (payment, resumed) = match self
            .start_on(
                key,
                Operation::Capture,
                &request,
                payment_id,
                &payment,
                |p| p.check_capture(&amount),
            )
            .await?
        {
            (Start::Answered(answer), _) => return Ok(*answer),
            (Start::Go { resumed, .. }, payment) => (payment, resumed),
        };
        self.reach(key, resumed, || {
            self.processor
                .capture(key, &payment.processor_reference, &amount)
        })
        .await?;
        let mut after = payment;
        after.status = Status::Captured;
        after.captured_minor = amount.minor;
        after.updated_at = now();
        let transition = Transition::Captured {
            minor: amount.minor,
        };
        self.finish(key, &after, &transition).await
    }

    pub async fn void(&self, key: &str, payment_id: Uuid) -> Result<pb::Payment, PaymentsError> {
        let request = payment_id.to_string();
        let payment = self.store.get_payment(payment_id).await;
        let (payment, resumed) = match self
            .start_on(key, Operation::Void, &request, payment_id, &payment, |p| {
                p.check_void()
            })
            .await?
        {
            (Start::Answered(answer), _) => return Ok(*answer),
            (Start::Go { resumed, .. }, payment) => (payment, resumed),
        };
        self.reach(key, resumed, || {
            self.processor.void(key, &payment.processor_reference)
        })
        .await?;
        let mut after = payment;
        after.status = Status::Voided;
        after.updated_at = now();
        self.finish(key, &after, &Transition::Voided).await
    }

    pub async fn refund(
        &self,
        key: &str,
        payment_id: Uuid,
        amount: Amount,
        reason: String,
    ) -> Result<pb::Payment, PaymentsError> {
        let request = format!("{payment_id}|{}|{}|{reason}", amount.minor, amount.currency);
        let payment = self.store.get_payment(payment_id).await;
        let (payment, resumed) = match self
            .start_on(
                key,
                Operation::Refund,
                &request,
                payment_id,
                &payment,
                |p| p.check_refund(&amount),
            )
            .await?
        {
            (Start::Answered(answer), _) => return Ok(*answer),
            (Start::Go { resumed, .. }, payment) => (payment, resumed),
        };
        self.reach(key, resumed, || {
            self.processor
                .refund(key, &payment.processor_reference, &amount)
        })
        .await?;
        let mut after = payment;
        after.status = after.status_after_refund(amount.minor);
        after.refunded_minor += amount.minor;
        after.updated_at = now();
        let transition = Transition::Refunded {
            minor: amount.minor,
            reason,
        };
        self.finish(key, &after, &transition).await
    }

    /// [`Self::start`] for an operation on an existing payment: a replay is answered before
    /// the payment's state is judged (it may have moved on since the first call).
    async fn start_on(
        &self,
        key: &str,
        operation: Operation,
        request: &str,
        payment_id: Uuid,
        payment: &Result<Payment, PaymentsError>,
        rule: impl FnOnce(&Payment) -> Result<(), crate::domain::RuleError>,
    ) -> Result<(Start, Payment), PaymentsError> {
        let check = || match payment {
            Ok(p) => rule(p).map_err(PaymentsError::from),
            Err(_) => Err(PaymentsError::NotFound(payment_id.to_string())),
        };
        let start = self
            .start(key, operation, request, payment_id, check)
            .await?;
        match (start, payment) {
            (Start::Answered(answer), Ok(p)) => Ok((Start::Answered(answer), p.clone())),
            (start, Ok(p)) => Ok((start, p.clone())),
            (_, Err(_)) => Err(PaymentsError::NotFound(payment_id.to_string())),
        }
    }

    /// Judges `key`: replays an answer, resumes a pending call, or (after `check`) claims it.
    async fn start(
        &self,
        key: &str,
        operation: Operation,
        request: &str,
        payment_id: Uuid,
        check: impl FnOnce() -> Result<(), PaymentsError>,
    ) -> Result<Start, PaymentsError> {
        if let Some(row) = self.store.find_key(key).await? {
            return judge(key, operation, request, row);
        }
        check()?;
        match self
            .store
            .claim(key, operation, request, payment_id)
            .await?
        {
            Claim::Claimed => Ok(Start::Go {
                payment_id,
                resumed: false,
            }),
            Claim::Exists(row) => judge(key, operation, request, row),
        }
    }

    /// Calls the processor; an unknown outcome is asked about (`lookup`) before it is given up
    /// on, and a resumed key is asked about before anything is sent again.
    async fn reach<F, Fut>(
        &self,
        key: &str,
        resumed: bool,
        call: F,
    ) -> Result<Outcome, PaymentsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Outcome, ProcessorError>>,
    {
        if resumed {
            match self.processor.lookup(key).await {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => {}
                Err(err) => return Err(PaymentsError::Unavailable(err)),
            }
        }
        match call().await {
            Ok(outcome) => Ok(outcome),
            Err(err @ ProcessorError::Refused(_)) => {
                // Nothing happened at the processor: free the payment for other operations.
                self.store.release(key).await?;
                Err(PaymentsError::Refused(err))
            }
            Err(err @ ProcessorError::Unreachable(_)) => match self.processor.lookup(key).await {
                Ok(Some(outcome)) => {
                    tracing::info!(key, "processor answer was lost; reconciled by lookup");
                    Ok(outcome)
                }
                // Unknown still: the key stays pending and the caller retries with it.
                _ => Err(PaymentsError::Unavailable(err)),
            },
        }
    }

    /// Records the change and its answer; a concurrent call that finished first wins.
    async fn finish(
        &self,
        key: &str,
        payment: &Payment,
        transition: &Transition,
    ) -> Result<pb::Payment, PaymentsError> {
        let answer = payment_to_pb(payment);
        match self
            .store
            .finish(key, payment, transition, &answer.encode_to_vec())
            .await?
        {
            None => Ok(answer),
            Some(first) => decode(key, &first),
        }
    }
}

fn judge(
    key: &str,
    operation: Operation,
    request: &str,
    row: KeyRow,
) -> Result<Start, PaymentsError> {
    if row.operation != operation.as_str() || row.request != request {
        return Err(PaymentsError::KeyReused(key.to_owned()));
    }
    match row.result {
        Some(bytes) => Ok(Start::Answered(Box::new(decode(key, &bytes)?))),
        None => Ok(Start::Go {
            payment_id: row.payment_id,
            resumed: true,
        }),
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<pb::Payment, PaymentsError> {
    pb::Payment::decode(bytes).map_err(|_| PaymentsError::CorruptResult(key.to_owned()))
}
