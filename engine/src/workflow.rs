//! The workflow file as written: `apiVersion: kpilot/v1`, `kind: Workflow`.
//!
//! These types mirror the YAML one to one; [`crate::validate`] turns them into a
//! [`crate::Plan`] the scheduler can run.

use std::collections::BTreeMap;
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
        let declares = |line: &str| {
            line.match_indices("id:").any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let starts_key = matches!(before, None | Some(' ' | '{' | '-' | ','));
                let value = line[at + 3..]
                    .split([',', '}', '#'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(['"', '\'']);
                starts_key && value == id
            })
        };
        self.text.lines().position(declares).map(|i| i + 1)
    }
}

/// The top level of a workflow file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workflow {
    /// Always `kpilot/v1`.
    pub api_version: String,
    /// Always `Workflow`.
    pub kind: String,
    /// Name and description.
    pub metadata: Metadata,
    /// Params, concurrency and steps.
    pub spec: Spec,
}

/// `metadata` of a workflow.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The workflow's name; generated run ids start with it.
    pub name: String,
    /// What the workflow is for, shown by `validate`.
    #[serde(default)]
    pub description: Option<String>,
}

/// `spec` of a workflow.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Declared params; `--param NAME=VALUE` overrides their defaults.
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    /// The most steps running at once (default: the number of CPUs).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// The steps, each kept as YAML until [`crate::validate`] reads it, so that
    /// an error names the step it is in.
    pub steps: Vec<serde_yaml::Value>,
    /// Named executors (pools of nodes or agents) steps may name.
    #[serde(default)]
    pub executors: Vec<ExecutorSpec>,
    /// A file listing node agents, for per-node steps without a cluster.
    #[serde(default)]
    pub inventory: Option<String>,
}

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
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodesSpec {
    /// Label selector narrowing the executor's nodes.
    #[serde(default)]
    pub selector: Option<String>,
    /// The most nodes running the step at once (default: all).
    #[serde(default)]
    pub max_parallel: Option<usize>,
    /// Failed nodes tolerated; one more stops the rollout (default 0).
    #[serde(default)]
    pub max_failures: Option<usize>,
}

/// One entry of `spec.params`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// The name used in `{{params.NAME}}`, `params.NAME` and `PARAM_NAME`.
    pub name: String,
    /// The value when `--param` does not set one; without it the param is required.
    #[serde(default)]
    pub default: Option<serde_yaml::Value>,
    /// What the param means.
    #[serde(default)]
    pub description: Option<String>,
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

/// A step as written, before validation. The body (`command`, `script`,
/// `gate`, `approval`, ...) is kept in `body`, keyed by its kind.
#[derive(Debug, Clone, Deserialize)]
pub struct StepSpec {
    /// Unique id of the step.
    pub id: String,
    /// Phase of the step.
    pub phase: Phase,
    /// Edges from the steps this one waits for.
    #[serde(default)]
    pub needs: Vec<serde_yaml::Value>,
    /// CEL condition; false skips the step.
    #[serde(default)]
    pub when: Option<String>,
    /// Which executor runs the step (default `global`).
    #[serde(default)]
    pub executor: Option<String>,
    /// For a fan-out executor: which nodes, how many at once, how many may fail.
    #[serde(default)]
    pub nodes: Option<NodesSpec>,
    /// Retry policy.
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// Time limit of one attempt.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Id of the repair step to run when this one fails.
    #[serde(default)]
    pub repair: Option<String>,
    /// Whether the step may run again after a crash without a person deciding.
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// Every other key: exactly one must be a body.
    #[serde(flatten)]
    pub body: BTreeMap<String, serde_yaml::Value>,
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
];

/// `needs: [{step: ID, on: ...}]` in its long form.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeedSpec {
    /// The step waited for.
    pub step: String,
    /// Which outcome of it lets this step run (default success).
    #[serde(default)]
    pub on: Option<NeedOn>,
}

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

/// `retry` of a step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// How many times a failed attempt is tried again.
    pub limit: u32,
    /// The wait between attempts.
    #[serde(default)]
    pub backoff: Option<BackoffSpec>,
}

/// `retry.backoff` of a step: exponential, without jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    /// The first wait (default `1s`).
    #[serde(default)]
    pub initial: Option<String>,
    /// The factor each wait grows by (default 2).
    #[serde(default)]
    pub factor: Option<f64>,
    /// The longest wait (default `1m`).
    #[serde(default)]
    pub max: Option<String>,
}
