//! The human report of a check: what was read, then the violations grouped by kind.

use std::fmt::Write as _;

use crate::check::{Kind, Violation};
use crate::types::MeshState;

/// The report: which parts were checked and which were not, then each violation under its
/// kind, and a last line with the verdict.
#[must_use]
pub fn render(state: &MeshState, violations: &[Violation]) -> String {
    let parts = [
        ("orders", state.orders.is_some()),
        ("inventory", state.inventory.is_some()),
        ("payments", state.payments.is_some()),
        ("shipping", state.shipping.is_some()),
        ("jetstream", state.jetstream.is_some()),
    ];
    let named = |read: bool| {
        parts
            .iter()
            .filter(|(_, r)| *r == read)
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!("checked: {}\n", or_none(&named(true)));
    let unread = named(false);
    if !unread.is_empty() {
        let _ = writeln!(out, "not checked: {unread}");
    }
    for kind in Kind::ALL {
        let of_kind: Vec<_> = violations.iter().filter(|v| v.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{kind} ({})", of_kind.len());
        for v in of_kind {
            let _ = writeln!(out, "  {}: {}", v.subject, v.detail);
        }
    }
    let verdict = match violations.len() {
        0 => "no violations".to_owned(),
        1 => "1 VIOLATION".to_owned(),
        n => format!("{n} VIOLATIONS"),
    };
    let _ = writeln!(out, "\n{verdict}");
    out
}

fn or_none(list: &str) -> &str {
    if list.is_empty() { "nothing" } else { list }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_kind_and_names_what_was_not_read() {
        let state = MeshState {
            jetstream: Some(crate::types::JetStreamState::default()),
            ..MeshState::default()
        };
        let violations = vec![
            Violation {
                kind: Kind::DeadLetter,
                subject: "stream SHOP_DLQ".into(),
                detail: "2 dead letters".into(),
            },
            Violation {
                kind: Kind::OrderNotTerminal,
                subject: "order a".into(),
                detail: "still PENDING".into(),
            },
        ];
        let text = render(&state, &violations);
        assert_eq!(
            text,
            "checked: jetstream\n\
             not checked: orders, inventory, payments, shipping\n\
             \norder-not-terminal (1)\n  order a: still PENDING\n\
             \ndead-letter (1)\n  stream SHOP_DLQ: 2 dead letters\n\
             \n2 VIOLATIONS\n"
        );
        assert!(render(&state, &[]).ends_with("\nno violations\n"));
    }
}
