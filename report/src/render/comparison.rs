//! How two reports' findings compare (`kpilot report diff`), as text and
//! JSON ([`super::html::comparison`] is its page): what is new, what was
//! resolved, what is still failing.

use std::fmt::Write as _;

use serde::Serialize;

use crate::findings::{Comparison, Finding};
use crate::Report;

/// The JSON of a comparison: the two runs and the three lists.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Json<'a> {
    before: &'a str,
    after: &'a str,
    #[serde(flatten)]
    comparison: &'a Comparison,
}

/// The comparison as pretty-printed JSON: `{"before", "after", "new",
/// "resolved", "persisting"}`, each finding as `findings` serialises it.
pub fn json(before: &Report, after: &Report, comparison: &Comparison) -> String {
    let json = Json {
        before: &before.run_id,
        after: &after.run_id,
        comparison,
    };
    let mut out = serde_json::to_string_pretty(&json).unwrap_or_else(|e| {
        // Strings, numbers and lists only: it always serialises.
        format!("{{\"error\": \"the comparison cannot be written as JSON: {e}\"}}")
    });
    out.push('\n');
    out
}

fn line(out: &mut String, mark: &str, f: &Finding) {
    let mut about = String::new();
    if let Some(o) = &f.object {
        about = match &o.namespace {
            Some(ns) => format!(" · {} {ns}/{}", o.kind, o.name),
            None => format!(" · {} {}", o.kind, o.name),
        };
    } else if let Some(node) = &f.node {
        about = format!(" · node {node}");
    }
    let _ = writeln!(
        out,
        "{mark} {} · {}{about} · {}",
        f.check,
        f.outcome.as_str(),
        f.message
    );
}

/// The comparison as text: a summary line, then new, resolved and
/// persisting findings, each on a line.
pub fn text(before: &Report, after: &Report, c: &Comparison) -> String {
    let mut out = format!(
        "kpilot report diff {} → {}\n{} new, {} resolved, {} persisting\n",
        before.run_id,
        after.run_id,
        c.new.len(),
        c.resolved.len(),
        c.persisting.len()
    );
    for (title, mark, findings) in [
        ("NEW", "+", &c.new),
        ("RESOLVED", "-", &c.resolved),
        ("PERSISTING", "=", &c.persisting),
    ] {
        if findings.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title} ({})", findings.len());
        for f in findings {
            line(&mut out, mark, f);
        }
    }
    out
}
