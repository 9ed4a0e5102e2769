//! The report as JUnit XML, for CI systems that show test results: one
//! `testsuite` per category, one `testcase` per item of a check (a check
//! without items is one testcase). A `failed` item or check is a
//! `<failure>`, one that could not be checked an `<error>`, each carrying
//! the message and what to do; a `warning` passes (kpilot's exit code is 0
//! for warnings too) and says so in its `<system-out>`.

use std::fmt::Write as _;

use crate::model::{CheckResult, Item, Outcome, Report};

/// `text` with the five XML specials escaped, and characters XML 1.0 cannot
/// hold (control characters but tab and newlines) dropped.
pub(crate) fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// What an item is about, for its testcase's name: its object, else its node,
/// else its message.
fn about(item: &Item) -> String {
    match (&item.object, &item.node) {
        (Some(o), _) => {
            let name = match &o.namespace {
                Some(ns) => format!("{ns}/{}", o.name),
                None => o.name.clone(),
            };
            format!("{} {name}", o.kind)
        }
        (None, Some(node)) => format!("node {node}"),
        (None, None) => item.message.clone(),
    }
}

/// The body of a failure or error: the message, where, and what to do.
fn detail(c: &CheckResult, message: &str, item: Option<&Item>) -> String {
    let mut out = format!("{message}\n");
    if let Some(item) = item {
        if let Some(o) = &item.object {
            let mut words = vec![o.api_version.as_str(), o.kind.as_str()];
            words.retain(|w| !w.is_empty());
            let name = match &o.namespace {
                Some(ns) => format!("{ns}/{}", o.name),
                None => o.name.clone(),
            };
            let _ = writeln!(out, "object: {} {name}", words.join(" "));
        }
        if let Some(node) = &item.node {
            let _ = writeln!(out, "node: {node}");
        }
        if let Some(source) = &item.source {
            let _ = writeln!(out, "source: {source}");
        }
    }
    let _ = writeln!(out, "check: {} ({})", c.id, c.title);
    if !c.remediation.text.is_empty() {
        let _ = writeln!(out, "what to do: {}", c.remediation.text);
    }
    if let Some(url) = &c.remediation.url {
        let _ = writeln!(out, "see {url}");
    }
    out
}

fn testcase(
    out: &mut String,
    classname: &str,
    name: &str,
    c: &CheckResult,
    outcome: Outcome,
    message: &str,
    item: Option<&Item>,
) {
    let _ = write!(
        out,
        "    <testcase classname=\"{}\" name=\"{}\" time=\"0\"",
        xml(classname),
        xml(name)
    );
    let tag = match outcome {
        Outcome::Passed => {
            out.push_str("/>\n");
            return;
        }
        Outcome::Warning => {
            let _ = writeln!(
                out,
                ">\n      <system-out>warning: {}</system-out>\n    </testcase>",
                xml(&detail(c, message, item))
            );
            return;
        }
        Outcome::Failed => "failure",
        Outcome::Error => "error",
    };
    let _ = writeln!(
        out,
        ">\n      <{tag} message=\"{}\" type=\"{}\">{}</{tag}>\n    </testcase>",
        xml(message),
        outcome.as_str(),
        xml(&detail(c, message, item))
    );
}

/// The report as JUnit XML.
pub fn render(report: &Report) -> String {
    let mut suites = String::new();
    let (mut tests, mut failures, mut errors) = (0, 0, 0);
    let time = report.time.format("%Y-%m-%dT%H:%M:%S");
    for k in &report.categories {
        let mut cases = String::new();
        let (mut n, mut f, mut e) = (0, 0, 0);
        let mut count = |outcome| {
            n += 1;
            match outcome {
                Outcome::Failed => f += 1,
                Outcome::Error => e += 1,
                _ => {}
            }
        };
        for c in report.checks.iter().filter(|c| c.category == k.id) {
            if c.items.is_empty() {
                count(c.outcome);
                testcase(
                    &mut cases,
                    &k.id,
                    &format!("{}: {}", c.id, c.title),
                    c,
                    c.outcome,
                    &c.message,
                    None,
                );
            }
            for item in &c.items {
                count(item.outcome);
                testcase(
                    &mut cases,
                    &k.id,
                    &format!("{}: {}", c.id, about(item)),
                    c,
                    item.outcome,
                    &item.message,
                    Some(item),
                );
            }
        }
        tests += n;
        failures += f;
        errors += e;
        let name = if k.title.is_empty() {
            k.id.clone()
        } else {
            format!("{} ({})", k.title, k.id)
        };
        let _ = write!(
            suites,
            "  <testsuite name=\"{}\" tests=\"{n}\" failures=\"{f}\" errors=\"{e}\" skipped=\"0\" time=\"0\" timestamp=\"{time}\">\n{cases}  </testsuite>\n",
            xml(&name)
        );
    }
    let what = if report.scenario.is_empty() {
        format!("workflow {}", report.workflow)
    } else {
        report.scenario.clone()
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"0\">\n{suites}</testsuites>\n",
        xml(&format!("kpilot report {} ({what})", report.run_id))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_specials_are_escaped_and_control_characters_dropped() {
        assert_eq!(
            xml("<a href=\"x\">&'\u{1b}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
    }
}
