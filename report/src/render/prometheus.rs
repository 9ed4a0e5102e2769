//! Reports as Prometheus metrics, in the text exposition format: what
//! `kpilot report RUN -o prometheus` writes for node_exporter's textfile
//! collector, and what `kpilot patrol --listen` serves on `/metrics` (with
//! its own families after these).

use std::fmt::Write as _;

use crate::model::{Outcome, Report};

/// One family: its name, help and type, and its samples.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(Vec<(String, String)>, f64)>,
}

/// `value` as a label value: backslash, double quote and newline escaped.
fn label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A number as the format writes it: integers without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The metrics of `reports`, each with its extra labels (a patrol passes
/// `patrol` and `schedule`; `kpilot report` passes none), each family's
/// HELP and TYPE once whatever the number of reports:
///
/// - `kpilot_check_failed{check,category,severity}`: 1 when the check did
///   not hold (warning or failed), else 0;
/// - `kpilot_check_error{...}`: 1 when it could not be checked, else 0;
/// - `kpilot_check_failing_items{...}`: its items that did not pass;
/// - `kpilot_report_checks{outcome}`: the report's checks by outcome;
/// - `kpilot_report_timestamp_seconds`: when the report's run started.
pub fn render(reports: &[(Vec<(String, String)>, &Report)]) -> String {
    let mut failed = Family {
        name: "kpilot_check_failed",
        help: "1 when the check did not hold (its outcome is warning or failed), else 0.",
        kind: "gauge",
        samples: Vec::new(),
    };
    let mut error = Family {
        name: "kpilot_check_error",
        help: "1 when the check could not be checked (its data could not be read, or its step did not run), else 0.",
        kind: "gauge",
        samples: Vec::new(),
    };
    let mut items = Family {
        name: "kpilot_check_failing_items",
        help: "The check's items (nodes, objects) that did not pass.",
        kind: "gauge",
        samples: Vec::new(),
    };
    let mut checks = Family {
        name: "kpilot_report_checks",
        help: "The report's checks by outcome: passed, warning, failed, error.",
        kind: "gauge",
        samples: Vec::new(),
    };
    let mut time = Family {
        name: "kpilot_report_timestamp_seconds",
        help: "When the report's run started, in seconds since the Unix epoch.",
        kind: "gauge",
        samples: Vec::new(),
    };
    for (extra, report) in reports {
        for c in &report.checks {
            let mut labels = extra.clone();
            labels.extend([
                ("check".to_owned(), c.id.clone()),
                ("category".to_owned(), c.category.clone()),
                ("severity".to_owned(), c.severity.clone()),
            ]);
            let did_not_hold = matches!(c.outcome, Outcome::Warning | Outcome::Failed);
            failed
                .samples
                .push((labels.clone(), f64::from(u8::from(did_not_hold))));
            error.samples.push((
                labels.clone(),
                f64::from(u8::from(c.outcome == Outcome::Error)),
            ));
            let bad = c
                .items
                .iter()
                .filter(|i| i.outcome != Outcome::Passed)
                .count();
            items.samples.push((labels, bad as f64));
        }
        let s = &report.summary;
        for (outcome, n) in [
            (Outcome::Passed, s.passed),
            (Outcome::Warning, s.warning),
            (Outcome::Failed, s.failed),
            (Outcome::Error, s.error),
        ] {
            let mut labels = extra.clone();
            labels.push(("outcome".to_owned(), outcome.as_str().to_owned()));
            checks.samples.push((labels, n as f64));
        }
        time.samples.push((
            extra.clone(),
            report.time.timestamp_millis() as f64 / 1000.0,
        ));
    }
    let mut out = String::new();
    for family in [failed, error, items, checks, time] {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for (labels, value) in family.samples {
            out.push_str(family.name);
            if !labels.is_empty() {
                let pairs: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", label_value(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", pairs.join(","));
            }
            let _ = writeln!(out, " {}", number(value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(1.5), "1.5");
    }
}
