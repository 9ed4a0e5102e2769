//! The workflow file as written: `apiVersion: kpilot/v1`, `kind: Workflow`.
//!
//! Its keys, phases and outcomes; [`crate::validate`] reads the YAML, checks
//! every field's type and value, and turns it into a [`crate::Plan`] the
//! scheduler can run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The API version every workflow file declares.
pub const API_VERSION: &str = "kpilot/v1";
/// The kind every workflow file declares.
pub const KIND: &str = "Workflow";

/// A workflow file's text and where it came from; errors name `path`.
#[derive(Debug, Clone)]
pub struct WorkflowSource {
    /// The file the text was read from, as the user named it.
    pub path: PathBuf,
    /// The YAML text.
    pub text: String,
}

impl WorkflowSource {
    /// Reads a workflow file.
    pub fn read(path: &Path) -> Result<Self, std::io::Error> {
        Ok(WorkflowSource {
            path: path.to_owned(),
            text: std::fs::read_to_string(path)?,
        })
    }

    /// The 1-based line of the first `id: <id>` entry, so a message about a step
    /// can point at it.
    pub fn line_of_step(&self, id: &str) -> Option<usize> {
        self.lines_of_entry("id", id).into_iter().next()
    }

    /// The 1-based lines of every `KEY: VALUE` entry, block or flow style, in
    /// file order: the n-th step with an id is at the n-th line of its id.
    pub fn lines_of_entry(&self, key: &str, value: &str) -> Vec<usize> {
        self.entries(key).remove(value).unwrap_or_default()
    }

    /// Every value written for `KEY:` (block or flow style), with the
    /// 1-based lines it is written at, in file order; read in one pass, so
    /// that a workflow of 10,000 steps is not read 10,000 times.
    pub fn entries(&self, key: &str) -> HashMap<&str, Vec<usize>> {
        let pattern = format!("{key}:");
        let mut out: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, line) in self.text.lines().enumerate() {
            for (at, _) in line.match_indices(&pattern) {
                let before = line[..at].chars().next_back();
                if !matches!(before, None | Some(' ' | '{' | '-' | ',')) {
                    continue;
                }
                let found = line[at + pattern.len()..]
                    .split([',', '}', '#'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(['"', '\'']);
                let lines = out.entry(found).or_default();
                if lines.last() != Some(&(i + 1)) {
                    lines.push(i + 1);
                }
            }
        }
        out
    }

    /// The 1-based line of the first `KEY:` in the file, for a message about
    /// a field outside the steps (`concurrency`, `metadata`).
    pub fn line_of_key(&self, key: &str) -> Option<usize> {
        let pattern = format!("{key}:");
        self.text
            .lines()
            .position(|line| {
                line.match_indices(&pattern).any(|(at, _)| {
                    let before = line[..at].chars().next_back();
                    matches!(before, None | Some(' ' | '{' | '-' | ','))
                })
            })
            .map(|i| i + 1)
    }
}

/// The keys of the top level of a workflow file.
pub const TOP_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
/// The keys of `metadata`.
pub const METADATA_FIELDS: &[&str] = &["name", "description", "annotations"];
/// The keys of `spec`.
pub const SPEC_FIELDS: &[&str] = &[
    "params",
    "concurrency",
    "steps",
    "executors",
    "inventory",
    "onFailure",
];
/// The keys of `spec.onFailure`.
pub const ON_FAILURE_FIELDS: &[&str] = &["restore"];
/// The keys of one entry of `spec.params`.
pub const PARAM_FIELDS: &[&str] = &["name", "default", "description"];
/// The keys of one entry of `spec.executors`.
pub const EXECUTOR_FIELDS: &[&str] = &[
    "name",
    "selector",
    "nodes",
    "inventory",
    "perNode",
    "concurrency",
    "maxFailures",
];
/// The keys of a step's `nodes`.
pub const NODES_FIELDS: &[&str] = &[
    "selector",
    "maxParallel",
    "maxUnavailable",
    "maxFailures",
    "order",
];
/// The keys of a step's `nodes.order`.
pub const ORDER_FIELDS: &[&str] = &["controlPlaneFirst", "label"];
/// The keys of a `group` body.
pub const GROUP_FIELDS: &[&str] = &["steps"];
/// The keys of a step's `retry`.
pub const RETRY_FIELDS: &[&str] = &["limit", "backoff"];
/// The keys of a step's `retry.backoff`.
pub const BACKOFF_FIELDS: &[&str] = &["initial", "factor", "max"];
/// The keys of a `needs` entry in its long form.
pub const NEED_FIELDS: &[&str] = &["step", "on"];

/// One entry of `spec.executors`: a named pool of nodes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecutorSpec {
    /// The name steps use in `executor:`.
    pub name: String,
    /// Nodes of the pool by label selector (`role=worker,zone in (a,b)`).
    #[serde(default)]
    pub selector: Option<String>,
    /// Nodes of the pool by name.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// An inventory file of agents for this pool (default: `spec.inventory`).
    #[serde(default)]
    pub inventory: Option<String>,
    /// Whether a step runs on every node of the pool (true) or once, on one of them.
    #[serde(default)]
    pub per_node: bool,
    /// The most instances of one step running at once in this pool.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Failed instances tolerated before the step stops starting new ones.
    #[serde(default)]
    pub max_failures: Option<usize>,
}

/// `nodes` of a per-node step: which nodes, and how to roll over them.
#[derive(Debug, Clone, Default)]
pub struct NodesSpec {
    /// Label selector narrowing the executor's nodes.
    pub selector: Option<String>,
    /// The most nodes running the step at once (default: all).
    pub max_parallel: Option<usize>,
    /// Failed nodes tolerated; one more stops the rollout (default 0).
    pub max_failures: Option<usize>,
    /// The most nodes taken out at once, a count or a share of the nodes.
    pub max_unavailable: Option<Unavailable>,
    /// The order the nodes are rolled over in.
    pub order: Option<NodeOrder>,
}

/// `nodes.maxUnavailable`: a count, or a percentage of the step's nodes
/// (rounded down, at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unavailable {
    /// This many nodes.
    Count(usize),
    /// This percentage of the nodes.
    Percent(u32),
}

impl Unavailable {
    /// How many of `nodes` nodes may be out at once.
    pub fn of(self, nodes: usize) -> usize {
        match self {
            Unavailable::Count(n) => n.max(1),
            Unavailable::Percent(p) => (nodes * p as usize / 100).max(1),
        }
    }
}

/// `nodes.order`: control-plane nodes first (labelled
/// `node-role.kubernetes.io/control-plane`), then by a label's value, then by
/// name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOrder {
    /// Nodes with the control-plane role go first.
    pub control_plane_first: bool,
    /// Nodes sorted by this label's value (nodes without it last).
    pub label: Option<String>,
}

/// The phase a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Checks before anything changes.
    PreCheck,
    /// The change itself.
    Upgrade,
    /// Checks after the change.
    PostCheck,
    /// Runs only as the `repair` of a failed step.
    Repair,
    /// Checks of a scheduled patrol.
    Patrol,
}

impl Phase {
    /// Every phase, in the order a workflow runs them.
    pub const ALL: [Phase; 5] = [
        Phase::PreCheck,
        Phase::Upgrade,
        Phase::PostCheck,
        Phase::Repair,
        Phase::Patrol,
    ];

    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PreCheck => "pre-check",
            Phase::Upgrade => "upgrade",
            Phase::PostCheck => "post-check",
            Phase::Repair => "repair",
            Phase::Patrol => "patrol",
        }
    }
}

/// The keys of a step other than its body, for messages about unknown keys.
pub const STEP_FIELDS: &[&str] = &[
    "id",
    "phase",
    "needs",
    "when",
    "executor",
    "nodes",
    "retry",
    "timeout",
    "repair",
    "idempotent",
    "annotations",
];

/// The step fields a member of a group may have (the group gives the rest:
/// its executor's nodes and its rolling limits).
pub const MEMBER_FIELDS: &[&str] = &[
    "id",
    "phase",
    "needs",
    "executor",
    "retry",
    "timeout",
    "idempotent",
    "annotations",
];

/// Which outcome of a needed step lets the dependent run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NeedOn {
    /// The needed step succeeded.
    Success,
    /// The needed step failed.
    Failure,
    /// The needed step ended, whatever its outcome.
    Always,
}

impl NeedOn {
    /// Every outcome, as written in YAML.
    pub const ALL: [NeedOn; 3] = [NeedOn::Success, NeedOn::Failure, NeedOn::Always];

    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            NeedOn::Success => "success",
            NeedOn::Failure => "failure",
            NeedOn::Always => "always",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Unavailable;

    #[test]
    fn max_unavailable_is_a_count_or_a_share_rounded_down_and_at_least_one() {
        assert_eq!(Unavailable::Count(3).of(10), 3);
        assert_eq!(Unavailable::Percent(25).of(10), 2);
        assert_eq!(Unavailable::Percent(25).of(3), 1);
        assert_eq!(Unavailable::Percent(100).of(7), 7);
        assert_eq!(Unavailable::Count(0).of(7), 1);
    }
}
