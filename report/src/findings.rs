//! Findings: what a report says is wrong, one per item that did not pass
//! (or per check that did not pass and names no item), each with a key that
//! stays the same from one run to the next, so that two reports can be
//! compared: what is new, what was resolved, what is still failing.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{ObjectRef, Outcome, Report};

/// One thing a report found wrong.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Stable across runs: the check's id, and the object, node or message
    /// of the item (`nodes-ready|Node/worker-2`).
    pub key: String,
    /// The check's id.
    pub check: String,
    /// What holds when the check passes.
    pub title: String,
    /// The check's category.
    pub category: String,
    /// error, warning or info.
    pub severity: String,
    /// warning, failed or error.
    pub outcome: Outcome,
    /// What is wrong.
    pub message: String,
    /// The object it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// The node it was found on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What to do.
    pub remediation: String,
}

/// Every finding of `report`, in the report's order (worst first).
pub fn findings(report: &Report) -> Vec<Finding> {
    let mut out = Vec::new();
    for check in &report.checks {
        if check.outcome == Outcome::Passed {
            continue;
        }
        let base = |outcome, message: &str, object, node, key: String| Finding {
            key,
            check: check.id.clone(),
            title: check.title.clone(),
            category: check.category.clone(),
            severity: check.severity.clone(),
            outcome,
            message: message.to_owned(),
            object,
            node,
            remediation: check.remediation.text.clone(),
        };
        let failing: Vec<_> = check
            .items
            .iter()
            .filter(|i| i.outcome != Outcome::Passed)
            .collect();
        if failing.is_empty() {
            out.push(base(
                check.outcome,
                &check.message,
                None,
                None,
                check.id.clone(),
            ));
            continue;
        }
        for item in failing {
            let what = match (&item.object, &item.node) {
                (Some(o), _) => match &o.namespace {
                    Some(ns) => format!("{}/{ns}/{}", o.kind, o.name),
                    None => format!("{}/{}", o.kind, o.name),
                },
                (None, Some(node)) => format!("node:{node}|{}", item.message),
                (None, None) => item.message.clone(),
            };
            out.push(base(
                item.outcome,
                &item.message,
                item.object.clone(),
                item.node.clone(),
                format!("{}|{what}", check.id),
            ));
        }
    }
    out
}

/// How the findings of a later report differ from an earlier one's.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Comparison {
    /// Found in the later report only.
    pub new: Vec<Finding>,
    /// Found in the earlier report only: fixed since.
    pub resolved: Vec<Finding>,
    /// Found in both (as the later report says them).
    pub persisting: Vec<Finding>,
}

impl Comparison {
    /// Whether anything appeared or went away.
    pub fn changed(&self) -> bool {
        !self.new.is_empty() || !self.resolved.is_empty()
    }
}

/// Compares the findings of `before` and `after` by key.
pub fn compare(before: &Report, after: &Report) -> Comparison {
    let earlier: BTreeMap<String, Finding> = findings(before)
        .into_iter()
        .map(|f| (f.key.clone(), f))
        .collect();
    let later = findings(after);
    let mut comparison = Comparison::default();
    for f in &later {
        if earlier.contains_key(&f.key) {
            comparison.persisting.push(f.clone());
        } else {
            comparison.new.push(f.clone());
        }
    }
    let now: std::collections::BTreeSet<&str> = later.iter().map(|f| f.key.as_str()).collect();
    comparison.resolved = findings(before)
        .into_iter()
        .filter(|f| !now.contains(f.key.as_str()))
        .collect();
    comparison
}
