//! The report as an operator reads it on a console: per category the counts
//! normal / warning / abnormal, abnormal first; then each check that did not
//! pass with its items and what to do. Plain when piped, coloured on a
//! terminal, and never wider than [`WIDTH`] columns.

use std::fmt::Write as _;

use crate::model::{CheckResult, Item, Outcome, Report};

/// The widest line written.
pub const WIDTH: usize = 100;

/// At most this many items of one check are printed; JSON has them all.
const ITEMS_SHOWN: usize = 30;

/// How to write.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// ANSI colours (a terminal that wants them).
    pub colour: bool,
}

impl Style {
    fn paint(&self, outcome: Outcome, text: &str) -> String {
        if !self.colour {
            return text.to_owned();
        }
        let code = match outcome {
            Outcome::Passed => "32",
            Outcome::Warning => "33",
            Outcome::Failed => "31",
            Outcome::Error => "35",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    fn bold(&self, text: &str) -> String {
        if self.colour {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Breaks `text` into lines of at most `width` characters after `indent`,
/// at spaces; a word longer than the line is cut.
fn wrap(out: &mut String, indent: &str, text: &str, width: usize) {
    let room = width.saturating_sub(indent.chars().count()).max(20);
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let mut word = word.to_owned();
            while word.chars().count() > room {
                if !line.is_empty() {
                    let _ = writeln!(out, "{indent}{line}");
                    line.clear();
                }
                let head: String = word.chars().take(room).collect();
                let _ = writeln!(out, "{indent}{head}");
                word = word.chars().skip(room).collect();
            }
            let needed =
                line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
            if needed > room && !line.is_empty() {
                let _ = writeln!(out, "{indent}{line}");
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
        if !line.is_empty() {
            let _ = writeln!(out, "{indent}{line}");
        }
    }
}

fn mark(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Passed => "ok",
        Outcome::Warning => "!",
        Outcome::Failed => "x",
        Outcome::Error => "?",
    }
}

fn item_line(item: &Item) -> String {
    let mut line = String::new();
    if let Some(node) = &item.node {
        let _ = write!(line, "[{node}] ");
    }
    line.push_str(&item.message);
    let mut about = Vec::new();
    if let Some(o) = &item.object {
        let name = match &o.namespace {
            Some(ns) => format!("{ns}/{}", o.name),
            None => o.name.clone(),
        };
        let kind = if o.api_version.is_empty() {
            o.kind.clone()
        } else {
            format!("{} {}", o.api_version, o.kind)
        };
        let named = line.contains(&o.name);
        if !named || item.node.is_none() {
            about.push(format!("{kind} {name}"));
        }
    }
    if let Some(s) = &item.source {
        about.push(format!("from {s}"));
    }
    if let Some(r) = &item.replacement {
        about.push(format!("use {r}"));
    }
    if let Some(r) = &item.removed_in {
        about.push(format!("removed in {r}"));
    }
    if !about.is_empty() {
        let _ = write!(line, " ({})", about.join("; "));
    }
    line
}

fn check(out: &mut String, c: &CheckResult, style: Style) {
    let head = format!("{} {} · {}", mark(c.outcome), c.id, c.title);
    let _ = writeln!(out, "{}", style.paint(c.outcome, &head));
    let _ = writeln!(
        out,
        "  {} · severity {} · {}",
        c.category,
        c.severity,
        c.outcome.as_str()
    );
    wrap(out, "  ", &c.message, WIDTH);
    for item in c.items.iter().take(ITEMS_SHOWN) {
        let line = item_line(item);
        let mut lines = String::new();
        wrap(&mut lines, "      ", &line, WIDTH);
        let first = lines.trim_start().to_owned();
        let _ = write!(
            out,
            "  - {} {}",
            style.paint(item.outcome, mark(item.outcome)),
            first
        );
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    if c.items.len() > ITEMS_SHOWN {
        let _ = writeln!(
            out,
            "  ... and {} more (`-o json` lists them all)",
            c.items.len() - ITEMS_SHOWN
        );
    }
    if !c.remediation.text.is_empty() {
        wrap(
            out,
            "  ",
            &format!("what to do: {}", c.remediation.text),
            WIDTH,
        );
    }
    if let Some(url) = &c.remediation.url {
        wrap(out, "  ", &format!("see {url}"), WIDTH);
    }
}

/// The report as text.
pub fn render(report: &Report, style: Style) -> String {
    let mut out = String::new();
    let s = &report.summary;
    let target = report
        .target
        .as_ref()
        .map(|t| format!(" to {t}"))
        .unwrap_or_default();
    // An inspection says its scenario; any other run its workflow.
    let what = if report.scenario.is_empty() {
        format!("workflow {}", report.workflow)
    } else {
        format!("{}{target}", report.scenario)
    };
    wrap(
        &mut out,
        "",
        &format!("kpilot report {} · {what}", report.run_id),
        WIDTH,
    );
    let cluster = if report.cluster.server.is_empty() && report.cluster.cluster_type.is_empty() {
        // A workflow's run: the report knows no cluster.
        "no cluster read".to_owned()
    } else if report.cluster.server.is_empty() {
        format!("no cluster read · {}", report.cluster.cluster_type)
    } else {
        format!(
            "cluster {} · {} · {}",
            report.cluster.server, report.cluster.version, report.cluster.cluster_type
        )
    };
    wrap(
        &mut out,
        "",
        &format!(
            "{cluster} · {}",
            report.time.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        WIDTH,
    );
    let total = s.passed + s.warning + s.failed + s.error;
    let mut summary = format!(
        "{total} checks: {} normal, {} warning, {} abnormal",
        s.passed,
        s.warning,
        s.abnormal()
    );
    if s.error > 0 {
        let _ = write!(summary, " ({} could not be checked)", s.error);
    }
    let _ = writeln!(out, "{}\n", style.bold(&summary));
    if report.categories.is_empty() {
        let _ = writeln!(
            out,
            "No check applied; `kpilot catalog` lists the checks and what they apply to."
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{:<70} {:>8} {:>8} {:>9}",
        "CATEGORY", "NORMAL", "WARNING", "ABNORMAL"
    );
    for k in &report.categories {
        let mut name = format!("{} ({})", k.title, k.id);
        if name.chars().count() > 70 {
            name = name.chars().take(67).collect::<String>() + "...";
        }
        let row = format!(
            "{name:<70} {:>8} {:>8} {:>9}",
            k.counts.passed,
            k.counts.warning,
            k.counts.abnormal()
        );
        let worst = if k.counts.abnormal() > 0 {
            Outcome::Failed
        } else if k.counts.warning > 0 {
            Outcome::Warning
        } else {
            Outcome::Passed
        };
        let _ = writeln!(out, "{}", style.paint(worst, &row));
    }
    for (outcome, title) in [
        (Outcome::Failed, "ABNORMAL"),
        (Outcome::Error, "COULD NOT CHECK"),
        (Outcome::Warning, "WARNING"),
    ] {
        let these: Vec<&CheckResult> = report
            .checks
            .iter()
            .filter(|c| c.outcome == outcome)
            .collect();
        if these.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{}",
            style.bold(&format!("{title} ({})", these.len()))
        );
        for c in these {
            check(&mut out, c, style);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_lines_within_the_width() {
        let mut out = String::new();
        let long = "word ".repeat(60) + &"x".repeat(150);
        wrap(&mut out, "  ", &long, 40);
        assert!(out.lines().all(|l| l.chars().count() <= 40), "{out}");
        assert!(out.lines().all(|l| l.starts_with("  ")));
        assert_eq!(out.split_whitespace().filter(|w| *w == "word").count(), 60);
    }
}
