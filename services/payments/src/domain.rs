//! Payments' types and rules: amounts in integer minor units, the payment state machine.
//! No I/O here.

use std::fmt;

use time::OffsetDateTime;
use uuid::Uuid;

/// A rule a request broke, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The value itself is wrong (zero, finer than the minor unit, too large).
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The value does not fit the payment's state (too much, another currency, wrong status).
    #[error("{field}: {reason}")]
    Precondition { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RuleError {
    RuleError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn precondition(field: &'static str, reason: impl Into<String>) -> RuleError {
    RuleError::Precondition {
        field,
        reason: reason.into(),
    }
}

/// Decimal places of the currency's minor unit (ISO 4217) for the currencies the contract
/// admits: none for JPY, KRW and ISK, two for the rest.
fn minor_exponent(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "ISK" => 0,
        _ => 2,
    }
}

/// A positive amount in integer minor units of one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    /// Minor units (cents), > 0.
    pub minor: i64,
    /// ISO 4217 code.
    pub currency: String,
}

impl Amount {
    /// The amount `units` + `nanos` billionths of `currency`, checked: positive, no finer
    /// than the minor unit, within `i64` minor units. `field` names the Money field.
    pub fn from_parts(
        field: &'static str,
        units: i64,
        nanos: i32,
        currency: &str,
    ) -> Result<Self, RuleError> {
        if units < 0 || nanos < 0 {
            return Err(invalid(field, "must not be negative"));
        }
        let exponent = minor_exponent(currency);
        let step = 10_i32.pow(9 - exponent);
        if nanos % step != 0 {
            return Err(invalid(
                field,
                format!("is finer than the minor unit of {currency}"),
            ));
        }
        let minor = units
            .checked_mul(10_i64.pow(exponent))
            .and_then(|m| m.checked_add(i64::from(nanos / step)))
            .ok_or_else(|| invalid(field, "is too large"))?;
        if minor == 0 {
            return Err(invalid(field, "must be greater than zero"));
        }
        Ok(Self {
            minor,
            currency: currency.to_owned(),
        })
    }

    /// `(units, nanos)` of `minor` units of `currency`.
    pub fn parts(minor: i64, currency: &str) -> (i64, i32) {
        let scale = 10_i64.pow(minor_exponent(currency));
        let step = 10_i64.pow(9 - minor_exponent(currency));
        let nanos = i32::try_from((minor % scale) * step).unwrap_or(0);
        (minor / scale, nanos)
    }
}

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Authorized,
    Declined,
    Voided,
    Captured,
    PartiallyRefunded,
    Refunded,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "authorized",
            Self::Declined => "declined",
            Self::Voided => "voided",
            Self::Captured => "captured",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
        }
    }

    /// The status stored as `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Authorized,
            Self::Declined,
            Self::Voided,
            Self::Captured,
            Self::PartiallyRefunded,
            Self::Refunded,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payment intent with its balances (sums of its ledger entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub status: Status,
    pub currency: String,
    pub authorized_minor: i64,
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub processor_reference: String,
    pub failure_reason: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Payment {
    fn same_currency(&self, amount: &Amount) -> Result<(), RuleError> {
        if amount.currency == self.currency {
            Ok(())
        } else {
            Err(precondition(
                "amount.currency_code",
                format!("must be {}, the authorized currency", self.currency),
            ))
        }
    }

    /// Whether `amount` may be captured now: authorized, same currency, at most authorized.
    pub fn check_capture(&self, amount: &Amount) -> Result<(), RuleError> {
        if self.status != Status::Authorized {
            return Err(precondition(
                "payment_id",
                format!(
                    "payment is {}, only an authorized payment is captured",
                    self.status
                ),
            ));
        }
        self.same_currency(amount)?;
        if amount.minor > self.authorized_minor {
            return Err(precondition("amount", "exceeds the authorized amount"));
        }
        Ok(())
    }

    /// Whether the payment may be voided now.
    pub fn check_void(&self) -> Result<(), RuleError> {
        if self.status == Status::Authorized {
            Ok(())
        } else {
            Err(precondition(
                "payment_id",
                format!(
                    "payment is {}, only an authorized payment is voided",
                    self.status
                ),
            ))
        }
    }

    /// Whether `amount` may be refunded now: captured, same currency, at most what is left.
    pub fn check_refund(&self, amount: &Amount) -> Result<(), RuleError> {
        if !matches!(self.status, Status::Captured | Status::PartiallyRefunded) {
            return Err(precondition(
                "payment_id",
                format!(
                    "payment is {}, only a captured payment is refunded",
                    self.status
                ),
            ));
        }
        self.same_currency(amount)?;
        let left = self.captured_minor - self.refunded_minor;
        if amount.minor > left {
            return Err(precondition(
                "amount",
                "exceeds what is captured and not yet refunded",
            ));
        }
        Ok(())
    }

    /// The status after refunding `minor` more.
    pub fn status_after_refund(&self, minor: i64) -> Status {
        if self.refunded_minor + minor >= self.captured_minor {
            Status::Refunded
        } else {
            Status::PartiallyRefunded
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(status: Status) -> Payment {
        Payment {
            id: Uuid::nil(),
            order_id: Uuid::nil(),
            customer_id: Uuid::nil(),
            status,
            currency: "EUR".into(),
            authorized_minor: 1000,
            captured_minor: if status == Status::Authorized { 0 } else { 800 },
            refunded_minor: 0,
            processor_reference: String::new(),
            failure_reason: String::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn eur(minor: i64) -> Amount {
        Amount {
            minor,
            currency: "EUR".into(),
        }
    }

    #[test]
    fn amounts_are_minor_units_of_their_currency() -> Result<(), RuleError> {
        assert_eq!(
            Amount::from_parts("amount", 10, 250_000_000, "EUR")?.minor,
            1025
        );
        assert_eq!(Amount::from_parts("amount", 500, 0, "JPY")?.minor, 500);
        assert_eq!(Amount::parts(1025, "EUR"), (10, 250_000_000));
        assert_eq!(Amount::parts(500, "JPY"), (500, 0));
        let err = |u, n, c| Amount::from_parts("amount", u, n, c).err();
        assert!(matches!(err(0, 0, "EUR"), Some(RuleError::Invalid { .. })));
        assert!(matches!(err(1, 1, "EUR"), Some(RuleError::Invalid { .. })));
        assert!(matches!(
            err(1, 10_000_000, "JPY"),
            Some(RuleError::Invalid { .. })
        ));
        assert!(matches!(
            err(i64::MAX, 0, "EUR"),
            Some(RuleError::Invalid { .. })
        ));
        assert!(matches!(err(-1, 0, "EUR"), Some(RuleError::Invalid { .. })));
        Ok(())
    }

    #[test]
    fn the_state_machine_admits_only_its_transitions() {
        let authorized = payment(Status::Authorized);
        assert_eq!(authorized.check_capture(&eur(1000)), Ok(()));
        assert!(authorized.check_capture(&eur(1001)).is_err());
        let usd = Amount {
            minor: 1,
            currency: "USD".into(),
        };
        assert!(matches!(
            authorized.check_capture(&usd),
            Err(RuleError::Precondition {
                field: "amount.currency_code",
                ..
            })
        ));
        assert!(authorized.check_refund(&eur(1)).is_err());
        assert_eq!(authorized.check_void(), Ok(()));

        let captured = payment(Status::Captured);
        assert!(captured.check_void().is_err());
        assert!(captured.check_capture(&eur(1)).is_err());
        assert_eq!(captured.check_refund(&eur(800)), Ok(()));
        assert!(captured.check_refund(&eur(801)).is_err());
        assert_eq!(captured.status_after_refund(300), Status::PartiallyRefunded);
        assert_eq!(captured.status_after_refund(800), Status::Refunded);
        assert!(payment(Status::Voided).check_void().is_err());
        assert_eq!(
            Status::parse("partially_refunded"),
            Some(Status::PartiallyRefunded)
        );
    }
}
