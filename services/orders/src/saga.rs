//! The order saga on `shop_saga`, and the undo saga that settles what an order leaves behind.
//!
//! # The order saga (`order`, run id = order id)
//! ```text
//! (cancel)  reserve ──► authorize ──► capture ──► commit ──► confirm
//!             │release      │settle payment
//! ```
//! Each call carries `<order_id>:<step>` as its idempotency key (inventory's reservation id is
//! chosen when the order is placed), so a step repeated after a crash or a lost answer is
//! applied once. On a failure the saga compensates in reverse:
//!
//! - **settle payment** (authorize's compensation) is decided by the payment's state, not by
//!   what the saga believes: it finds the payment (asking payments again with the authorize
//!   key when the saga never saw an answer), then voids an authorization, refunds a capture, or
//!   does nothing for a declined, voided or refunded one. So `capture` needs no compensation of
//!   its own, and an unknown outcome of either call is settled correctly.
//! - **release** (reserve's compensation) releases the reservation; if it was committed, the
//!   units go back with `AdjustStock` (keys `<order_id>:restock:<product_id>`); a reservation
//!   never made is nothing to do.
//! - **cancel** (a compensation-only step, first, so it runs last) cancels the order with the
//!   reason the failure implies ([`CancelReason::for_saga_failure`]).
//!
//! When payments cannot be reached to settle (processor or payments down), the settlement is
//! handed to an undo run (below) and the compensation goes on: the order is cancelled and its
//! stock released at once instead of waiting for the processor; the undo run settles the
//! payment when it can.
//!
//! The customer can cancel a pending order at any time: `capture` and `confirm` check the
//! order's state (confirm in the same transaction as its append), so the saga stops and
//! compensates instead of charging or confirming a cancelled order.
//!
//! # The undo saga (`order-undo`, run id derived from the order id)
//! Settles the payment and/or restocks, retried with backoff until done: started by
//! `CancelOrder` for a confirmed order (refund and restock) and by a settle compensation that
//! could not reach payments (settle only).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use serde::{Deserialize, Serialize};
use shop_proto::{
    inventory::{AdjustStockRequest, CommitRequest, ReleaseRequest, ReserveRequest, StockLine},
    payments::{
        AuthorizeRequest, CaptureRequest, GetPaymentRequest, Payment, PaymentStatus, RefundRequest,
        VoidRequest,
    },
};
use shop_saga::{Fence, RetryPolicy, Saga, StepError, StepInput};
use tonic::Code;
use uuid::Uuid;

use crate::{
    clients::Clients,
    convert::money_to_pb,
    domain::{CANCELLED_BY_CUSTOMER, CancelReason, Money, Order, OrderEvent, Status},
    error::OrdersError,
    store::{Announce, Change, Changed, PgOrderStore, SagaStart},
};

/// `saga_runs.kind` of the order saga.
pub const ORDER_SAGA: &str = "order";
/// `saga_runs.kind` of the undo saga.
pub const UNDO_SAGA: &str = "order-undo";

/// XORed into an order id to make its undo run's id: distinct from every order id in practice,
/// and the same on every attempt, so the undo run is started once.
const UNDO_ID_MASK: u128 = 0x5a5a_0000_0000_0000_0000_0000_0000_5a5a;

/// A product and quantity of the order, as inventory takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaLine {
    pub product_id: Uuid,
    pub quantity: i32,
}

/// The order saga's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSaga {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub lines: Vec<SagaLine>,
    pub total: Money,
    pub payment_method_token: String,
    pub reservation_id: Uuid,
    /// Set by `authorize`.
    pub payment_id: Option<String>,
}

impl OrderSaga {
    /// The data of a new order's saga.
    pub fn for_order(order: &Order, payment_method_token: &str) -> Self {
        Self {
            order_id: order.id,
            customer_id: order.customer_id,
            lines: order
                .lines
                .iter()
                .map(|l| SagaLine {
                    product_id: l.product_id,
                    quantity: l.quantity,
                })
                .collect(),
            total: order.total.clone(),
            payment_method_token: payment_method_token.to_owned(),
            reservation_id: order.reservation_id,
            payment_id: order.payment_id.clone(),
        }
    }

    fn key(&self, step: &str) -> String {
        format!("{}:{step}", self.order_id)
    }
}

/// The undo saga's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoSaga {
    pub order: OrderSaga,
    /// Void or refund whatever payment the order has.
    pub settle: bool,
    /// Release the reservation, or restock it if it was committed.
    pub restock: bool,
    /// Why, for the ledgers.
    pub reason: String,
}

impl UndoSaga {
    /// The run id of `order_id`'s undo run.
    pub fn run_id(order_id: Uuid) -> Uuid {
        Uuid::from_u128(order_id.as_u128() ^ UNDO_ID_MASK)
    }

    /// The run to start with this data.
    pub fn start(&self) -> Result<SagaStart, OrdersError> {
        SagaStart::new(UNDO_SAGA, Self::run_id(self.order.order_id), self)
    }
}

/// What the steps use.
#[derive(Clone)]
pub struct Steps {
    clients: Clients,
    store: PgOrderStore,
}

/// Whether a failed call's status says the call was definitely not applied.
fn definite(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::NotFound
            | Code::OutOfRange
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

/// The step error for a failed call to `what`.
fn call_failed(what: &str, status: &tonic::Status) -> StepError {
    let message = format!("{what}: {:?}: {}", status.code(), status.message());
    if definite(status.code()) {
        StepError::Failed(message)
    } else {
        StepError::Transient(message)
    }
}

fn lines_pb(lines: &[SagaLine]) -> Vec<StockLine> {
    lines
        .iter()
        .map(|l| StockLine {
            product_id: l.product_id.to_string(),
            quantity: l.quantity,
        })
        .collect()
}

fn status_of(payment: &Payment) -> PaymentStatus {
    PaymentStatus::try_from(payment.status).unwrap_or(PaymentStatus::Unspecified)
}

fn nanos(money: Option<&shop_proto::common::Money>) -> i128 {
    money.map_or(0, |m| {
        i128::from(m.units) * 1_000_000_000 + i128::from(m.nanos)
    })
}

/// The ledger reason for a compensation.
fn reason_of(failure: Option<&String>) -> String {
    let reason = failure.map_or("order cancelled", String::as_str);
    reason.chars().take(200).collect()
}

impl Steps {
    pub fn new(clients: Clients, store: PgOrderStore) -> Self {
        Self { clients, store }
    }

    /// The order saga.
    pub fn order_saga(&self, retry: RetryPolicy) -> Saga<OrderSaga> {
        let s = Arc::new(self.clone());
        let (c, r, rl, a, sp, cp, cm, cf) = (
            s.clone(),
            s.clone(),
            s.clone(),
            s.clone(),
            s.clone(),
            s.clone(),
            s.clone(),
            s,
        );
        Saga::new(ORDER_SAGA)
            .retry(retry)
            .compensation("cancel", move |i| c.clone().cancel(i).boxed())
            .compensated_step(
                "reserve",
                move |i| r.clone().reserve(i).boxed(),
                move |i| rl.clone().release(i).boxed(),
            )
            .compensated_step(
                "authorize",
                move |i| a.clone().authorize(i).boxed(),
                move |i| sp.clone().settle_or_hand_off(i).boxed(),
            )
            .step("capture", move |i| cp.clone().capture(i).boxed())
            .step("commit", move |i| cm.clone().commit(i).boxed())
            .step("confirm", move |i| cf.clone().confirm(i).boxed())
    }

    /// The undo saga: each step is retried until it succeeds (attempts without limit, capped
    /// backoff); a step that fails for good leaves the run compensated with its failure, for
    /// an operator.
    pub fn undo_saga(&self, max_backoff: Duration) -> Saga<UndoSaga> {
        let retry = RetryPolicy {
            max_attempts: u32::MAX,
            base_backoff: Duration::from_millis(200),
            max_backoff,
        };
        let (settle, restock) = (Arc::new(self.clone()), Arc::new(self.clone()));
        Saga::new(UNDO_SAGA)
            .retry(retry)
            .step("settle", move |i: StepInput<UndoSaga>| {
                let steps = settle.clone();
                async move {
                    if i.data.settle {
                        steps.settle(&i.data.order, &i.data.reason).await?;
                    }
                    Ok(i.data)
                }
                .boxed()
            })
            .step("restock", move |i: StepInput<UndoSaga>| {
                let steps = restock.clone();
                async move {
                    if i.data.restock {
                        steps.release_stock(&i.data.order, &i.data.reason).await?;
                    }
                    Ok(i.data)
                }
                .boxed()
            })
    }

    async fn reserve(self: Arc<Self>, i: StepInput<OrderSaga>) -> Result<OrderSaga, StepError> {
        let request = ReserveRequest {
            reservation_id: i.data.reservation_id.to_string(),
            order_id: i.data.order_id.to_string(),
            lines: lines_pb(&i.data.lines),
        };
        match self.clients.inventory.clone().reserve(request).await {
            Ok(_) => Ok(i.data),
            Err(status) if status.code() == Code::FailedPrecondition => Err(StepError::Failed(
                format!("out of stock: {}", status.message()),
            )),
            Err(status) => Err(call_failed("inventory Reserve", &status)),
        }
    }

    async fn release(self: Arc<Self>, i: StepInput<OrderSaga>) -> Result<OrderSaga, StepError> {
        self.release_stock(&i.data, &reason_of(i.failure.as_ref()))
            .await?;
        Ok(i.data)
    }

    /// Releases the order's reservation; if it was committed, puts its units back.
    async fn release_stock(&self, order: &OrderSaga, reason: &str) -> Result<(), StepError> {
        let request = ReleaseRequest {
            reservation_id: order.reservation_id.to_string(),
            reason: reason.chars().take(200).collect(),
        };
        match self.clients.inventory.clone().release(request).await {
            Ok(_) => Ok(()),
            // Never made (Reserve failed or never arrived): nothing to release.
            Err(status) if status.code() == Code::NotFound => Ok(()),
            // Committed: the units were sold; put them back.
            Err(status) if status.code() == Code::FailedPrecondition => {
                self.restock(order, reason).await
            }
            Err(status) => Err(call_failed("inventory Release", &status)),
        }
    }

    async fn restock(&self, order: &OrderSaga, reason: &str) -> Result<(), StepError> {
        for line in &order.lines {
            let request = AdjustStockRequest {
                product_id: line.product_id.to_string(),
                delta: i64::from(line.quantity),
                reason: format!("restock: order {} cancelled", order.order_id),
                idempotency_key: order.key(&format!("restock:{}", line.product_id)),
            };
            if let Err(status) = self.clients.inventory.clone().adjust_stock(request).await {
                tracing::warn!(order_id = %order.order_id, reason, "restock failed");
                return Err(call_failed("inventory AdjustStock", &status));
            }
        }
        Ok(())
    }

    async fn authorize(self: Arc<Self>, i: StepInput<OrderSaga>) -> Result<OrderSaga, StepError> {
        let mut data = i.data;
        let payment = self
            .authorize_call(&data, &i.idempotency_key)
            .await
            .map_err(|status| call_failed("payments Authorize", &status))?;
        if status_of(&payment) == PaymentStatus::Declined {
            return Err(StepError::Failed(format!(
                "payment declined: {}",
                payment.failure_reason
            )));
        }
        data.payment_id = Some(payment.payment_id);
        Ok(data)
    }

    async fn authorize_call(&self, data: &OrderSaga, key: &str) -> Result<Payment, tonic::Status> {
        let request = AuthorizeRequest {
            idempotency_key: key.to_owned(),
            order_id: data.order_id.to_string(),
            amount: Some(money_to_pb(&data.total)),
            customer_id: data.customer_id.to_string(),
            payment_method_token: data.payment_method_token.clone(),
        };
        let response = self.clients.payments.clone().authorize(request).await?;
        response
            .into_inner()
            .payment
            .ok_or_else(|| tonic::Status::internal("Authorize answered without a payment"))
    }

    /// Settles the payment; if payments cannot be reached, hands it to the undo run.
    async fn settle_or_hand_off(
        self: Arc<Self>,
        i: StepInput<OrderSaga>,
    ) -> Result<OrderSaga, StepError> {
        let reason = reason_of(i.failure.as_ref());
        match self.settle(&i.data, &reason).await {
            Ok(()) => Ok(i.data),
            Err(StepError::Transient(error)) => {
                tracing::warn!(order_id = %i.data.order_id, %error, "payment settles later, in the undo run");
                self.hand_off(&i.data, i.fence, reason).await?;
                Ok(i.data)
            }
            Err(failed) => Err(failed),
        }
    }

    async fn hand_off(
        &self,
        order: &OrderSaga,
        fence: Fence,
        reason: String,
    ) -> Result<(), StepError> {
        let undo = UndoSaga {
            order: order.clone(),
            settle: true,
            restock: false,
            reason,
        };
        let start = undo
            .start()
            .map_err(|e| StepError::Failed(format!("undo run: {e}")))?;
        let mut tx = self.store.pool().begin().await?;
        fence.hold(&mut tx).await?;
        shop_saga::start(&mut tx, start.kind, start.id, &start.data).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Voids an authorization, refunds a capture, or does nothing, by the payment's state.
    async fn settle(&self, order: &OrderSaga, reason: &str) -> Result<(), StepError> {
        let payment_id = match &order.payment_id {
            Some(id) => id.clone(),
            None => {
                if order.payment_method_token.is_empty() {
                    return Ok(());
                }
                // The saga never saw an answer: ask again with the same key. If the first call
                // never arrived this authorizes now, and it is voided just below.
                let payment = self
                    .authorize_call(order, &order.key("authorize"))
                    .await
                    .map_err(|status| call_failed("payments Authorize (lookup)", &status))?;
                payment.payment_id
            }
        };
        let mut payments = self.clients.payments.clone();
        let payment = payments
            .get_payment(GetPaymentRequest {
                payment_id: payment_id.clone(),
            })
            .await
            .map_err(|status| call_failed("payments GetPayment", &status))?
            .into_inner()
            .payment
            .ok_or_else(|| StepError::Transient("GetPayment answered without a payment".into()))?;
        match status_of(&payment) {
            PaymentStatus::Authorized => {
                let request = VoidRequest {
                    payment_id,
                    idempotency_key: order.key("void"),
                };
                payments
                    .void(request)
                    .await
                    .map_err(|status| call_failed("payments Void", &status))?;
            }
            PaymentStatus::Captured | PaymentStatus::PartiallyRefunded => {
                let left = nanos(payment.captured_amount.as_ref())
                    - nanos(payment.refunded_amount.as_ref());
                let amount = Money::from_nanos(left, &order.total.currency)
                    .ok_or_else(|| StepError::Failed("refund amount out of range".into()))?;
                let request = RefundRequest {
                    payment_id,
                    amount: Some(money_to_pb(&amount)),
                    idempotency_key: order.key("refund"),
                    reason: reason.chars().take(500).collect(),
                };
                payments
                    .refund(request)
                    .await
                    .map_err(|status| call_failed("payments Refund", &status))?;
            }
            PaymentStatus::Declined
            | PaymentStatus::Voided
            | PaymentStatus::Refunded
            | PaymentStatus::Unspecified => {}
        }
        Ok(())
    }

    /// Fails the step if the customer cancelled the order meanwhile.
    async fn not_cancelled(&self, order_id: Uuid) -> Result<(), StepError> {
        let order = self
            .store
            .get(order_id)
            .await
            .map_err(|e| StepError::Transient(format!("read order: {e}")))?;
        match order {
            Some(order) if order.status == Status::Cancelled => {
                Err(StepError::Failed(CANCELLED_BY_CUSTOMER.into()))
            }
            Some(_) => Ok(()),
            None => Err(StepError::Failed(format!(
                "order {order_id} does not exist"
            ))),
        }
    }

    async fn capture(self: Arc<Self>, i: StepInput<OrderSaga>) -> Result<OrderSaga, StepError> {
        self.not_cancelled(i.data.order_id).await?;
        let payment_id = i
            .data
            .payment_id
            .clone()
            .ok_or_else(|| StepError::Failed("no payment to capture".into()))?;
        let request = CaptureRequest {
            payment_id,
            amount: Some(money_to_pb(&i.data.total)),
            idempotency_key: i.idempotency_key.clone(),
        };
        self.clients
            .payments
            .clone()
            .capture(request)
            .await
            .map_err(|status| call_failed("payments Capture", &status))?;
        Ok(i.data)
    }

    async fn commit(self: Arc<Self>, i: StepInput<OrderSaga>) -> Result<OrderSaga, StepError> {
        let request = CommitRequest {
            reservation_id: i.data.reservation_id.to_string(),
        };
        self.clients
            .inventory
            .clone()
            .commit(request)
            .await
            .map_err(|status| call_failed("inventory Commit", &status))?;
        Ok(i.data)
    }

    async fn confirm(self: Arc<Self>, i: StepInput<OrderSaga>) -> Result<OrderSaga, StepError> {
        let payment_id = i.data.payment_id.clone().unwrap_or_default();
        let changed = self
            .store
            .change(i.data.order_id, Some(i.fence), None, |order| {
                Ok((order.status == Status::Pending).then(|| Change {
                    events: vec![OrderEvent::Confirmed {
                        payment_id: payment_id.clone(),
                    }],
                    announce: vec![Announce::Confirmed],
                    saga: None,
                }))
            })
            .await
            .map_err(step_error)?;
        match changed {
            Changed::Order(order) if order.status == Status::Cancelled => {
                Err(StepError::Failed(CANCELLED_BY_CUSTOMER.into()))
            }
            _ => Ok(i.data),
        }
    }

    async fn cancel(self: Arc<Self>, i: StepInput<OrderSaga>) -> Result<OrderSaga, StepError> {
        let failure = i.failure.clone().unwrap_or_else(|| "saga failed".into());
        let reason = CancelReason::for_saga_failure(&failure);
        let payment_id = i.data.payment_id.clone();
        self.store
            .change(i.data.order_id, Some(i.fence), None, |order| {
                Ok((order.status == Status::Pending).then(|| Change {
                    events: vec![OrderEvent::Cancelled {
                        reason,
                        detail: failure.clone(),
                        payment_id: payment_id.clone(),
                    }],
                    announce: vec![Announce::Cancelled],
                    saga: None,
                }))
            })
            .await
            .map_err(step_error)?;
        Ok(i.data)
    }
}

/// A store error inside a step: a lost lease or the database is transient; corrupt state is not.
fn step_error(err: OrdersError) -> StepError {
    match err {
        OrdersError::Saga(e) => StepError::from(e),
        OrdersError::Store(_) | OrdersError::Contended(_) => StepError::Transient(err.to_string()),
        other => StepError::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_ids_are_stable_and_distinct() {
        let order = Uuid::now_v7();
        assert_eq!(UndoSaga::run_id(order), UndoSaga::run_id(order));
        assert_ne!(UndoSaga::run_id(order), order);
    }

    #[test]
    fn only_definite_codes_fail_a_step() {
        let failed = call_failed("x", &tonic::Status::failed_precondition("short"));
        assert!(matches!(failed, StepError::Failed(_)));
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Internal] {
            let status = tonic::Status::new(code, "boom");
            assert!(matches!(call_failed("x", &status), StepError::Transient(_)));
        }
    }
}
