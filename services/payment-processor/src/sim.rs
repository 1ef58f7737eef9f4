//! The simulation's state: charges, the outcome of every idempotency key, and the behaviour.
//!
//! No I/O here: the gRPC layer asks [`Simulation::admit`] whether a call fails before doing
//! anything (hard-down, transient failure), then applies it with one of the operation methods.
//! An outcome is recorded under its key the first time; a repeat of the key returns that
//! record and changes nothing, which is what makes the caller's retries safe.

use std::collections::HashMap;

use shop_proto::common::Money;
use shop_proto::processor::{Decision, OperationKind, OperationResult};

use crate::config::Behavior;

/// Why the simulation refuses an operation (nothing was applied or recorded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// Hard-down or a transient failure.
    #[error("processor unavailable")]
    Unavailable,
    /// No charge with that reference.
    #[error("charge {0} not found")]
    UnknownCharge(String),
    /// The key was used for an operation of another kind.
    #[error("idempotency_key was used for another operation")]
    KeyReused,
    /// The charge is not in a state that allows it, or the amount is too large.
    #[error("{0}")]
    Refused(String),
}

/// One charge (authorization) as the processor books it, in nanos of its currency.
#[derive(Debug, Clone)]
struct Charge {
    currency: String,
    authorized: i128,
    captured: i128,
    refunded: i128,
    voided: bool,
}

/// Everything the simulated processor knows.
#[derive(Debug)]
pub struct Simulation {
    behavior: Behavior,
    charges: HashMap<String, Charge>,
    records: HashMap<String, OperationResult>,
    order: Vec<String>,
    requests_total: u64,
    next_charge: u64,
}

fn nanos(money: &Money) -> i128 {
    i128::from(money.units) * 1_000_000_000 + i128::from(money.nanos)
}

impl Simulation {
    /// An empty processor behaving as `behavior`.
    pub fn new(behavior: Behavior) -> Self {
        Self {
            behavior,
            charges: HashMap::new(),
            records: HashMap::new(),
            order: Vec::new(),
            requests_total: 0,
            next_charge: 1,
        }
    }

    /// The behaviour in force.
    pub fn behavior(&self) -> &Behavior {
        &self.behavior
    }

    /// Replaces the behaviour.
    pub fn set_behavior(&mut self, behavior: Behavior) {
        self.behavior = behavior;
    }

    /// Requests received so far.
    pub fn requests_total(&self) -> u64 {
        self.requests_total
    }

    /// Counts a request and decides whether it fails before any effect; `roll` is a uniform
    /// sample in `0..1` (passed in so tests choose it).
    pub fn admit(&mut self, roll: f64) -> Result<(), SimError> {
        self.requests_total += 1;
        if self.behavior.hard_down || roll < self.behavior.failure_rate {
            return Err(SimError::Unavailable);
        }
        Ok(())
    }

    /// The first outcome of `key`, if any request with it got through.
    pub fn lookup(&self, key: &str) -> Option<OperationResult> {
        self.records.get(key).cloned()
    }

    /// Every record, oldest first.
    pub fn operations(&self) -> Vec<OperationResult> {
        self.order
            .iter()
            .filter_map(|key| self.records.get(key).cloned())
            .collect()
    }

    /// The earlier outcome of `key` (counting this request), or `None` for a new key.
    fn replay(
        &mut self,
        key: &str,
        kind: OperationKind,
    ) -> Result<Option<OperationResult>, SimError> {
        let Some(record) = self.records.get_mut(key) else {
            return Ok(None);
        };
        if record.kind != kind as i32 {
            return Err(SimError::KeyReused);
        }
        record.requests += 1;
        Ok(Some(record.clone()))
    }

    fn record(&mut self, result: OperationResult) -> OperationResult {
        self.order.push(result.idempotency_key.clone());
        self.records
            .insert(result.idempotency_key.clone(), result.clone());
        result
    }

    fn charge(&mut self, reference: &str) -> Result<&mut Charge, SimError> {
        self.charges
            .get_mut(reference)
            .ok_or_else(|| SimError::UnknownCharge(reference.to_owned()))
    }

    /// Holds `amount` on `card_token`, unless the token is one that is declined.
    pub fn authorize(
        &mut self,
        key: &str,
        amount: Money,
        card_token: &str,
    ) -> Result<OperationResult, SimError> {
        if let Some(done) = self.replay(key, OperationKind::Authorize)? {
            return Ok(done);
        }
        let mut result = OperationResult {
            idempotency_key: key.to_owned(),
            kind: OperationKind::Authorize as i32,
            requests: 1,
            ..OperationResult::default()
        };
        if let Some(reason) = self.behavior.decline_tokens.get(card_token) {
            result.decision = Decision::Declined as i32;
            result.decline_reason.clone_from(reason);
        } else {
            let reference = format!("ch_{:08}", self.next_charge);
            self.next_charge += 1;
            self.charges.insert(
                reference.clone(),
                Charge {
                    currency: amount.currency_code.clone(),
                    authorized: nanos(&amount),
                    captured: 0,
                    refunded: 0,
                    voided: false,
                },
            );
            result.decision = Decision::Approved as i32;
            result.reference = reference;
        }
        result.amount = Some(amount);
        Ok(self.record(result))
    }

    /// Charges `amount` of an authorized charge (one capture per charge).
    pub fn capture(
        &mut self,
        key: &str,
        reference: &str,
        amount: Money,
    ) -> Result<OperationResult, SimError> {
        if let Some(done) = self.replay(key, OperationKind::Capture)? {
            return Ok(done);
        }
        let charge = self.charge(reference)?;
        if charge.voided || charge.captured > 0 {
            return Err(SimError::Refused("charge is not open for capture".into()));
        }
        if amount.currency_code != charge.currency || nanos(&amount) > charge.authorized {
            return Err(SimError::Refused("amount exceeds the authorization".into()));
        }
        charge.captured = nanos(&amount);
        Ok(self.approved(key, OperationKind::Capture, reference, amount))
    }

    /// Releases an authorized, uncaptured charge.
    pub fn void(&mut self, key: &str, reference: &str) -> Result<OperationResult, SimError> {
        if let Some(done) = self.replay(key, OperationKind::Void)? {
            return Ok(done);
        }
        let charge = self.charge(reference)?;
        if charge.voided || charge.captured > 0 {
            return Err(SimError::Refused("charge is not open for void".into()));
        }
        charge.voided = true;
        let amount = money(charge.authorized, &charge.currency);
        Ok(self.approved(key, OperationKind::Void, reference, amount))
    }

    /// Returns `amount` of what was captured and not yet refunded.
    pub fn refund(
        &mut self,
        key: &str,
        reference: &str,
        amount: Money,
    ) -> Result<OperationResult, SimError> {
        if let Some(done) = self.replay(key, OperationKind::Refund)? {
            return Ok(done);
        }
        let charge = self.charge(reference)?;
        let left = charge.captured - charge.refunded;
        if amount.currency_code != charge.currency || nanos(&amount) > left {
            return Err(SimError::Refused(
                "amount exceeds what is left to refund".into(),
            ));
        }
        charge.refunded += nanos(&amount);
        Ok(self.approved(key, OperationKind::Refund, reference, amount))
    }

    fn approved(
        &mut self,
        key: &str,
        kind: OperationKind,
        reference: &str,
        amount: Money,
    ) -> OperationResult {
        self.record(OperationResult {
            idempotency_key: key.to_owned(),
            kind: kind as i32,
            reference: reference.to_owned(),
            decision: Decision::Approved as i32,
            decline_reason: String::new(),
            amount: Some(amount),
            requests: 1,
        })
    }
}

fn money(total_nanos: i128, currency: &str) -> Money {
    Money {
        units: i64::try_from(total_nanos / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: i32::try_from(total_nanos % 1_000_000_000).unwrap_or(0),
        currency_code: currency.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BehaviorConfig;

    fn sim() -> Simulation {
        let behavior = BehaviorConfig::default().behavior();
        Simulation::new(behavior.unwrap_or_else(|_| unreachable!()))
    }

    fn eur(units: i64) -> Money {
        Money {
            units,
            nanos: 0,
            currency_code: "EUR".into(),
        }
    }

    #[test]
    fn a_repeated_key_returns_the_first_outcome_and_applies_once() -> Result<(), SimError> {
        let mut sim = sim();
        let auth = sim.authorize("a", eur(10), "tok_ok")?;
        let again = sim.authorize("a", eur(99), "tok_decline")?;
        assert_eq!(again.reference, auth.reference);
        assert_eq!(again.requests, 2);
        sim.capture("c", &auth.reference, eur(10))?;
        assert_eq!(sim.capture("c", &auth.reference, eur(10))?.requests, 2);
        // A second capture under a new key is refused: the first one took the charge.
        assert!(matches!(
            sim.capture("c2", &auth.reference, eur(1)),
            Err(SimError::Refused(_))
        ));
        assert_eq!(sim.operations().len(), 2);
        Ok(())
    }

    #[test]
    fn decline_tokens_decline_without_a_charge() -> Result<(), SimError> {
        let mut sim = sim();
        let result = sim.authorize("a", eur(10), "tok_insufficient")?;
        assert_eq!(result.decision, Decision::Declined as i32);
        assert_eq!(result.decline_reason, "insufficient_funds");
        assert!(result.reference.is_empty());
        Ok(())
    }

    #[test]
    fn refunds_stop_at_the_captured_amount() -> Result<(), SimError> {
        let mut sim = sim();
        let auth = sim.authorize("a", eur(10), "tok_ok")?;
        sim.capture("c", &auth.reference, eur(8))?;
        sim.refund("r1", &auth.reference, eur(5))?;
        assert!(sim.refund("r2", &auth.reference, eur(4)).is_err());
        sim.refund("r3", &auth.reference, eur(3))?;
        assert!(matches!(
            sim.void("v", &auth.reference),
            Err(SimError::Refused(_))
        ));
        assert_eq!(sim.lookup("r2"), None);
        assert!(matches!(
            sim.refund("a", &auth.reference, eur(1)),
            Err(SimError::KeyReused)
        ));
        Ok(())
    }

    #[test]
    fn hard_down_and_failure_rate_fail_before_any_effect() {
        let mut sim = sim();
        let mut behavior = sim.behavior().clone();
        behavior.failure_rate = 0.3;
        sim.set_behavior(behavior.clone());
        assert_eq!(sim.admit(0.29), Err(SimError::Unavailable));
        assert_eq!(sim.admit(0.31), Ok(()));
        behavior.hard_down = true;
        sim.set_behavior(behavior);
        assert_eq!(sim.admit(0.99), Err(SimError::Unavailable));
        assert_eq!(sim.requests_total(), 3);
    }
}
