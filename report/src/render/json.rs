//! The report as JSON, documented in `docs/reports.md`.

use crate::Report;

/// The report as pretty-printed JSON, ending with a newline.
pub fn render(report: &Report) -> String {
    let mut out = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        // The model holds only strings, numbers and lists: it always serialises.
        format!("{{\"error\": \"the report cannot be written as JSON: {e}\"}}")
    });
    out.push('\n');
    out
}
