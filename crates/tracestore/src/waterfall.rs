//! A trace drawn for the terminal.
//!
//! ```text
//! trace 4bf92f3577b34da6a3ce929d0e0e4736: 23 spans, 812.3 ms
//!     start    took  service        span
//!    0.0ms  812.3ms  orders         shop.orders.v1.OrderService/PlaceOrder   |████████████      |
//!    1.2ms    3.4ms  orders           shop.catalog.v1.CatalogService/Batc…   | ▏                |
//! ```
//!
//! Spans are drawn as a tree (children under their parent, by start time, indented); a span
//! whose parent did not arrive (its process died before exporting it) is drawn at the top
//! level, marked `(parent missing)`. Errors end their line with `✗` and the status message or
//! gRPC code.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use crate::store::StoredSpan;

/// Width of the service column (`payment-processor` fits).
const SERVICE_WIDTH: usize = 17;
/// Width of the name column.
const NAME_WIDTH: usize = 56;
/// Width of the time bar.
const BAR_WIDTH: usize = 30;

fn ms(ns: u64) -> String {
    // Display only: nanoseconds fit an f64 well enough for tenths of milliseconds.
    #[allow(clippy::cast_precision_loss)]
    let ms = ns as f64 / 1e6;
    format!("{ms:.1}ms")
}

fn bar(start: u64, end: u64, trace_start: u64, trace_len: u64) -> String {
    let scale = |t: u64| {
        let offset = u128::from(t.saturating_sub(trace_start));
        let cells = offset * (BAR_WIDTH as u128) / u128::from(trace_len.max(1));
        usize::try_from(cells).unwrap_or(BAR_WIDTH).min(BAR_WIDTH)
    };
    let (from, to) = (
        scale(start),
        scale(end).max(scale(start) + 1).min(BAR_WIDTH),
    );
    let from = from.min(BAR_WIDTH.saturating_sub(1));
    let mut out = String::with_capacity(BAR_WIDTH + 2);
    out.push('|');
    for cell in 0..BAR_WIDTH {
        out.push(if (from..to).contains(&cell) {
            '█'
        } else {
            ' '
        });
    }
    out.push('|');
    out
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return format!("{text:width$}");
    }
    let cut: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// `spans` (one trace) as a waterfall; a line saying so when there are none.
pub fn render(spans: &[StoredSpan]) -> String {
    let Some(first) = spans.first() else {
        return "no such trace (yet): spans arrive a moment after they end\n".to_owned();
    };
    let trace_start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let trace_end = spans.iter().map(|s| s.end_ns).max().unwrap_or(trace_start);
    let trace_len = trace_end.saturating_sub(trace_start);
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&StoredSpan>> = BTreeMap::new();
    let mut tops = Vec::new();
    for span in spans {
        if !span.parent_span_id.is_empty() && ids.contains(span.parent_span_id.as_str()) {
            children.entry(&span.parent_span_id).or_default().push(span);
        } else {
            tops.push(span);
        }
    }
    let by_start = |a: &&StoredSpan, b: &&StoredSpan| a.start_ns.cmp(&b.start_ns);
    tops.sort_by(by_start);
    for list in children.values_mut() {
        list.sort_by(by_start);
    }
    let errors = spans.iter().filter(|s| s.error).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace {}: {} spans, {}{}",
        first.trace_id,
        spans.len(),
        ms(trace_len),
        if errors > 0 {
            format!(", {errors} with errors")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "{:>9} {:>9}  {:<SERVICE_WIDTH$} {:<NAME_WIDTH$} ",
        "start", "took", "service", "span"
    );
    // Depth-first, iteratively (a trace may be deep).
    let mut stack: Vec<(&StoredSpan, usize)> = tops.iter().rev().map(|s| (*s, 0)).collect();
    while let Some((span, depth)) = stack.pop() {
        let orphan = depth == 0 && !span.parent_span_id.is_empty();
        let label = format!(
            "{}{}{}",
            "  ".repeat(depth),
            span.name,
            if orphan { " (parent missing)" } else { "" }
        );
        let mut line = format!(
            "{:>9} {:>9}  {:<14} {} {}",
            ms(span.start_ns.saturating_sub(trace_start)),
            ms(span.duration_ns()),
            truncate(&span.service, SERVICE_WIDTH),
            truncate(&label, NAME_WIDTH),
            bar(span.start_ns, span.end_ns, trace_start, trace_len),
        );
        if span.error {
            let why = if span.status_message.is_empty() {
                span.attribute("rpc.grpc.status_code")
                    .map(|c| format!("grpc status {c}"))
                    .unwrap_or_default()
            } else {
                span.status_message.clone()
            };
            let _ = write!(line, " ✗ {why}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if let Some(kids) = children.get(span.span_id.as_str()) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use super::*;

    fn span(id: &str, parent: &str, name: &str, start: u64, end: u64) -> StoredSpan {
        StoredSpan {
            trace_id: "t".repeat(32),
            span_id: id.to_owned(),
            parent_span_id: parent.to_owned(),
            name: name.to_owned(),
            kind: "internal".to_owned(),
            service: "orders".to_owned(),
            start_ns: start,
            end_ns: end,
            error: false,
            status_message: String::new(),
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn draws_the_tree_in_order_with_times_and_errors() {
        let mut failed = span("c", "a", "Capture", 40_000_000, 50_000_000);
        failed.error = true;
        failed
            .attributes
            .insert("rpc.grpc.status_code".into(), "14".into());
        let spans = vec![
            span("a", "", "PlaceOrder", 0, 100_000_000),
            span("b", "a", "BatchGetProducts", 10_000_000, 20_000_000),
            failed,
            span("d", "b", "batch_get", 11_000_000, 19_000_000),
            span("e", "gone", "saga order capture", 60_000_000, 70_000_000),
        ];
        let drawn = render(&spans);
        let lines: Vec<&str> = drawn.lines().collect();
        assert!(
            lines[0].contains("5 spans, 100.0ms, 1 with errors"),
            "{drawn}"
        );
        let names: Vec<&str> = lines[2..]
            .iter()
            .map(|l| l.split_whitespace().nth(3).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "PlaceOrder",
                "BatchGetProducts",
                "batch_get",
                "Capture",
                "saga"
            ],
            "{drawn}"
        );
        assert!(lines[3].contains("  BatchGetProducts"), "indented: {drawn}");
        assert!(lines[4].contains("    batch_get"), "{drawn}");
        assert!(lines[5].ends_with("✗ grpc status 14"), "{drawn}");
        assert!(lines[6].contains("(parent missing)"), "{drawn}");
        // The root's bar spans the whole line; a child's only its share.
        assert!(
            lines[2].contains(&format!("|{}|", "█".repeat(BAR_WIDTH))),
            "{drawn}"
        );
        assert!(lines[3].contains("10.0ms"), "{drawn}");
    }

    #[test]
    fn says_when_there_is_nothing() {
        assert!(render(&[]).starts_with("no such trace"));
    }
}
