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
//!
//! # Where this deviates from protovalidate
//!
//! - **No NUL in strings.** Every string value in a message, whether or not its field has
//!   rules (repeated items and map keys and values too), is rejected with the rule
//!   `string.no_nul` when it contains U+0000. protovalidate has no such rule, but PostgreSQL
//!   `text` can never hold that character, so a request carrying one could only fail later as
//!   `INTERNAL`. A field that really wants NUL opts out with `ignore = IGNORE_ALWAYS` (or its
//!   message with `disabled`), which turns off every rule on it, this one included.
//! - **Bounded reports and bounded work.** At most [`MAX_VIOLATIONS`] violations are kept (in
//!   the order found), plus a count of the ones left out, so that an error built from them
//!   stays small however bad the input. A repeated field or map over its `max_items` /
//!   `max_pairs` reports only that: its items are not checked one by one (nor for `unique`),
//!   as protovalidate would. Uniqueness is checked with a hash set, so the work for a message
//!   is linear in its size.

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

/// How many violations a [`Violations`] keeps; the rest are only counted.
pub const MAX_VIOLATIONS: usize = 20;

/// The rules a message broke: the first [`MAX_VIOLATIONS`] found, and how many more there were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(self))]
pub struct Violations {
    /// The violations kept, in the order found.
    pub violations: Vec<Violation>,
    /// How many further violations were found and left out.
    pub omitted: usize,
}

fn render(violations: &Violations) -> String {
    let mut text = violations
        .violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect::<Vec<_>>()
        .join("; ");
    if violations.omitted > 0 {
        text.push_str(&format!(" (and {} more)", violations.omitted));
    }
    text
}

/// Collects violations up to [`MAX_VIOLATIONS`] and counts the work done.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    kept: Vec<Violation>,
    omitted: usize,
    /// Values looked at, plus set insertions for `unique`: what a message costs to check.
    pub(crate) steps: u64,
}

impl Sink {
    pub(crate) fn push(&mut self, violation: Violation) {
        if self.kept.len() < MAX_VIOLATIONS {
            self.kept.push(violation);
        } else {
            self.omitted += 1;
        }
    }

    fn finish(self) -> Result<(), Violations> {
        if self.kept.is_empty() {
            Ok(())
        } else {
            Err(Violations {
                violations: self.kept,
                omitted: self.omitted,
            })
        }
    }
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
        self.validate_counting(message).0
    }

    /// [`Self::validate`], also telling how many steps the check took.
    pub(crate) fn validate_counting(
        &self,
        message: &DynamicMessage,
    ) -> (Result<(), Violations>, u64) {
        let mut sink = Sink::default();
        self.check_message(message, "", &mut sink);
        let steps = sink.steps;
        (sink.finish(), steps)
    }

    pub(crate) fn check_message(&self, message: &DynamicMessage, prefix: &str, out: &mut Sink) {
        if let Some(plan) = self.plans.get(message.descriptor().full_name()) {
            plan.check(self, message, prefix, out);
        }
    }
}

#[cfg(test)]
mod tests;
