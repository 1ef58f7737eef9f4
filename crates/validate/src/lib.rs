//! Request validation from the contracts themselves: the protovalidate (`buf.validate`)
//! standard rules written beside the fields in `proto/`, enforced on dynamic messages.
//!
//! [`Validator::new`] reads the rules of every message in a descriptor pool once, at start.
//! A rule it does not implement (CEL expressions, the rarer well-known string formats) is an
//! error there, not a silently skipped check: the contracts can only say what is enforced.
//!
//! Semantics follow protovalidate: rules on a field without presence apply to its zero value
//! too (so `string.uuid` rejects `""`) unless `ignore = IGNORE_IF_ZERO_VALUE`; rules on a
//! message field apply when it is set, and `required` demands that it is; nested messages are
//! validated recursively. Field paths in violations look like `price.units` and
//! `lines[2].quantity`.
//!
//! Supported: `required`, `ignore`; string `const len min_len max_len len_bytes min_bytes
//! max_bytes pattern prefix suffix contains not_contains in not_in email uuid`; every integer
//! and float type `const lt lte gt gte in not_in` (and `finite`); bool `const`; bytes `const
//! len min_len max_len`; enum `const defined_only in not_in`; repeated `min_items max_items
//! unique items`; map `min_pairs max_pairs keys values`; oneof `required`; message `disabled`.

mod plan;
mod rules;

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage as _};

pub use plan::MessagePlan;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field at fault, e.g. `price.units`.
    pub field: String,
    /// The rule, e.g. `string.min_len`.
    pub rule: String,
    /// What is wrong, for people.
    pub message: String,
}

/// Every rule a message broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct Violations(pub Vec<Violation>);

fn render(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A rule in the contracts that this validator cannot enforce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: unsupported validation rule {rule:?}")]
pub struct UnsupportedRule {
    /// The field, oneof or message carrying the rule.
    pub location: String,
    /// The rule's name.
    pub rule: String,
}

/// The compiled rules of every message in a pool.
#[derive(Debug, Clone)]
pub struct Validator {
    plans: HashMap<String, MessagePlan>,
}

impl Validator {
    /// Reads the rules of every message in `pool` outside the `google.` and `buf.` packages.
    pub fn new(pool: &DescriptorPool) -> Result<Self, UnsupportedRule> {
        let extensions = plan::Extensions::find(pool);
        let mut plans = HashMap::new();
        for message in pool.all_messages() {
            let name = message.full_name();
            if name.starts_with("google.") || name.starts_with("buf.") {
                continue;
            }
            plans.insert(
                name.to_owned(),
                MessagePlan::compile(&message, &extensions)?,
            );
        }
        Ok(Self { plans })
    }

    /// Checks `message` and every message nested in it.
    pub fn validate(&self, message: &DynamicMessage) -> Result<(), Violations> {
        let mut violations = Vec::new();
        self.check_message(message, "", &mut violations);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Violations(violations))
        }
    }

    pub(crate) fn check_message(
        &self,
        message: &DynamicMessage,
        prefix: &str,
        out: &mut Vec<Violation>,
    ) {
        if let Some(plan) = self.plans.get(message.descriptor().full_name()) {
            plan.check(self, message, prefix, out);
        }
    }
}

#[cfg(test)]
mod tests;
