//! Domain payments to protobuf: the answer a call returns and a retry gets back.

use shop_proto::payments as pb;
use shop_runtime::convert::timestamp;

use crate::domain::{Payment, Status};
use crate::store::money;

fn status_to_pb(status: Status) -> pb::PaymentStatus {
    match status {
        Status::Authorized => pb::PaymentStatus::Authorized,
        Status::Declined => pb::PaymentStatus::Declined,
        Status::Voided => pb::PaymentStatus::Voided,
        Status::Captured => pb::PaymentStatus::Captured,
        Status::PartiallyRefunded => pb::PaymentStatus::PartiallyRefunded,
        Status::Refunded => pb::PaymentStatus::Refunded,
    }
}

/// The protobuf form of `payment`.
pub fn payment_to_pb(payment: &Payment) -> pb::Payment {
    pb::Payment {
        payment_id: payment.id.to_string(),
        order_id: payment.order_id.to_string(),
        status: status_to_pb(payment.status) as i32,
        authorized_amount: Some(money(payment.authorized_minor, &payment.currency)),
        captured_amount: Some(money(payment.captured_minor, &payment.currency)),
        refunded_amount: Some(money(payment.refunded_minor, &payment.currency)),
        processor_reference: payment.processor_reference.clone(),
        failure_reason: payment.failure_reason.clone(),
        created_at: Some(timestamp(payment.created_at)),
        updated_at: Some(timestamp(payment.updated_at)),
    }
}
