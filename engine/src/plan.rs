//! A validated workflow: what the scheduler runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kpilot_expr::Expr;

use crate::dag::Dag;
use crate::id::StepId;
use crate::task::Task;
use crate::validate::{Invalid, Problem};
use crate::workflow::{NeedOn, Phase, WorkflowSource};

/// A workflow that passed validation: steps resolved to indices, expressions
/// compiled, bodies parsed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.description`.
    pub description: Option<String>,
    /// The steps, in file order; `needs` and `repair` refer to indices here.
    pub steps: Vec<PlannedStep>,
    /// The graph of `needs`.
    pub dag: Dag,
    /// The most steps running at once.
    pub concurrency: usize,
    /// Declared params and their defaults, in file order.
    pub params: Vec<PlannedParam>,
    /// `spec.executors` as written, for the crate that builds the executors.
    pub executors: Vec<crate::workflow::ExecutorSpec>,
    /// `spec.inventory`.
    pub inventory: Option<String>,
    /// `spec.onFailure.restore`: when the run fails or blocks, undo what its
    /// ledger holds (the nodes it cordoned).
    pub restore_on_failure: bool,
    /// What validation found suspicious but not wrong (`{{params.x}}` in a
    /// script); `validate` and `run` print them and go on.
    pub warnings: Vec<Problem>,
    /// Each step's index by its id: loading a run of 100,000 steps looks
    /// every stored record's step up here.
    pub(crate) by_id: std::collections::HashMap<String, usize>,
}

/// Where a step's attempts run, decided once at validation from its
/// executor: the scheduler, the executors and validation all ask this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Once, in the kpilot process (`executor: global`).
    Global,
    /// Once, on the first member of a `perNode: false` pool that answers;
    /// its one instance is named after the pool.
    PoolMember,
    /// Once on every node (`executor: per-node`, or a pool with `perNode: true`).
    EveryNode,
}

impl Placement {
    /// Whether the scheduler rolls the step over the instances its executor
    /// names (every placement but [`Placement::Global`]).
    pub fn has_instances(self) -> bool {
        self != Placement::Global
    }
}

/// The environment variable a param reaches processes as: `PARAM_` and its
/// name in upper case, `-` becoming `_`. Validation rejects two params with
/// the same variable.
pub fn param_env_name(param: &str) -> String {
    format!("PARAM_{}", param.to_ascii_uppercase().replace('-', "_"))
}

/// How the instances of one step roll over its nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Label selector narrowing the nodes (`nodes.selector`).
    pub selector: Option<String>,
    /// The most instances running at once (`nodes.maxParallel`, else the pool's concurrency).
    pub max_parallel: Option<usize>,
    /// Failed instances tolerated before no new one starts.
    pub max_failures: usize,
    /// The most nodes out at once as written (`nodes.maxUnavailable`),
    /// resolved against the node count when the nodes are known.
    pub max_unavailable: Option<crate::workflow::Unavailable>,
    /// The order the executor lists the nodes in (`nodes.order`).
    pub order: Option<crate::workflow::NodeOrder>,
}

impl FanOut {
    /// The most instances running at once over `nodes` nodes.
    pub fn limit(&self, nodes: usize) -> usize {
        match (self.max_unavailable, self.max_parallel) {
            (Some(u), Some(p)) => u.of(nodes).min(p),
            (Some(u), None) => u.of(nodes),
            (None, Some(p)) => p,
            (None, None) => usize::MAX,
        }
    }
}

/// A step's part in a rolling group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRole {
    /// The group: its members run per node, a sub-DAG for each node.
    Group {
        /// Its members' indices, in file order.
        members: Vec<usize>,
    },
    /// A member of the group at index `group`.
    Member {
        /// The group's index.
        group: usize,
        /// The members it waits for on the same node.
        needs: Vec<Need>,
    },
}

/// A declared param.
#[derive(Debug, Clone)]
pub struct PlannedParam {
    /// Its name.
    pub name: String,
    /// Its default, if it has one.
    pub default: Option<String>,
    /// What it means.
    pub description: Option<String>,
}

/// One validated step.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    /// The step's id.
    pub id: StepId,
    /// Its phase.
    pub phase: Phase,
    /// The steps it waits for, by index.
    pub needs: Vec<Need>,
    /// Its condition.
    pub when: Option<Expr>,
    /// The executor that runs it.
    pub executor: String,
    /// Where its attempts run, from its executor.
    pub placement: Placement,
    /// How it fans out over nodes, when its executor does.
    pub fan_out: FanOut,
    /// What it does.
    pub body: Body,
    /// How often and how patiently a failed attempt is tried again.
    pub retry: Option<RetryPolicy>,
    /// Time limit of one attempt.
    pub timeout: Option<Duration>,
    /// Index of the repair step run when this one fails.
    pub repair: Option<usize>,
    /// Whether it may be re-run after a crash without a person deciding.
    pub idempotent: bool,
    /// `annotations`: texts about the step for whoever reads the run; the
    /// engine keeps them and never acts on them.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Its part in a rolling group, if any.
    pub group: Option<GroupRole>,
}

impl PlannedStep {
    /// The group this step is a member of.
    pub fn member_of(&self) -> Option<usize> {
        match &self.group {
            Some(GroupRole::Member { group, .. }) => Some(*group),
            _ => None,
        }
    }

    /// The members of this group step (empty for any other step).
    pub fn members(&self) -> &[usize] {
        match &self.group {
            Some(GroupRole::Group { members }) => members,
            _ => &[],
        }
    }
}

/// An edge into a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Index of the needed step.
    pub step: usize,
    /// Which of its outcomes lets the dependent run.
    pub on: NeedOn,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Body {
    /// Passes when every need succeeded; otherwise blocks the run.
    Gate,
    /// Waits for `kpilot approve`.
    Approval {
        /// Shown to the person asked to approve.
        message: String,
    },
    /// A rolling group: its members (steps of their own, `GROUP.MEMBER`)
    /// run as a sub-DAG on each node; the group sums them up.
    Group,
    /// A task of a registered kind.
    Task {
        /// The kind's name (`command`, `script`, ...).
        kind: &'static str,
        /// The parsed body.
        task: Arc<dyn Task>,
        /// The body as written, for executors that run it elsewhere.
        spec: serde_yaml::Value,
        /// Its attempts run in the kpilot process even on a per-node
        /// executor ([`crate::TaskKind::runs_in_kpilot`]).
        local: bool,
    },
}

impl Body {
    /// The body key as written in YAML.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Gate => "gate",
            Body::Approval { .. } => "approval",
            Body::Group => "group",
            Body::Task { kind, .. } => kind,
        }
    }
}

/// `retry` after validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub limit: u32,
    /// The first wait.
    pub initial: Duration,
    /// Growth of each wait.
    pub factor: f64,
    /// The longest wait.
    pub max: Duration,
}

impl RetryPolicy {
    /// The waits before attempts 2, 3, ...: exponential from `initial` by
    /// `factor`, capped at `max`, without jitter so runs are reproducible.
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        use backoff::backoff::Backoff;
        let mut backoff = backoff::ExponentialBackoff {
            current_interval: self.initial,
            initial_interval: self.initial,
            randomization_factor: 0.0,
            multiplier: self.factor,
            max_interval: self.max,
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        };
        backoff.reset();
        let max = self.max;
        (0..self.limit).map(move |_| backoff.next_backoff().unwrap_or(max))
    }
}

impl Plan {
    /// The steps in order with their phase and kind, kept with a run so that
    /// reading it needs no plan.
    pub fn outline(&self) -> crate::store::Outline {
        crate::store::Outline {
            steps: self
                .steps
                .iter()
                .map(|s| crate::store::OutlineStep {
                    id: s.id.clone(),
                    phase: s.phase.as_str().to_owned(),
                    kind: s.body.kind().to_owned(),
                })
                .collect(),
        }
    }

    /// Index of the step with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The params of a run: defaults, overridden by `overrides`. An unknown
    /// name, or a param left without a value, is an error naming it.
    pub fn bind_params(
        &self,
        source: &WorkflowSource,
        overrides: &[(String, String)],
    ) -> Result<BTreeMap<String, String>, Invalid> {
        let mut problems = Vec::new();
        let mut values = BTreeMap::new();
        for (name, value) in overrides {
            if self.params.iter().any(|p| &p.name == name) {
                values.insert(name.clone(), value.clone());
            } else {
                let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                problems.push(Problem::new(
                    source,
                    format!(
                        "unknown param `{name}` given with --param; this workflow declares: {}",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        for param in &self.params {
            if values.contains_key(&param.name) {
                continue;
            }
            match &param.default {
                Some(default) => {
                    values.insert(param.name.clone(), default.clone());
                }
                None => problems.push(Problem::new(
                    source,
                    format!(
                        "param `{}` has no default and no value: pass --param {}=VALUE",
                        param.name, param.name
                    ),
                )),
            }
        }
        if problems.is_empty() {
            Ok(values)
        } else {
            Err(Invalid { problems })
        }
    }
}
