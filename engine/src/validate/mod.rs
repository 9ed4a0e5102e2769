//! Validation: from a workflow file's text to a [`Plan`], or to every problem
//! found, each naming the file, the line, the step and field, and what to change.
//!
//! The YAML is read into plain values first (merge keys `<<: *anchor` applied),
//! then every field is read by hand, so that a wrong type is said in the
//! user's words ("`timeout`: this is the number 1, but it must be a duration")
//! rather than in serde's.

mod read;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

pub use crate::duration::parse_duration;

use crate::dag::Dag;
use crate::id::StepId;
use crate::plan::{
    param_env_name, Body, FanOut, GroupRole, Need, Placement, Plan, PlannedParam, PlannedStep,
    RetryPolicy,
};
use crate::suggest::{closest, nearest, MAX_SUGGESTIONS};
use crate::task::{ParseContext, TaskRegistry};
use crate::workflow::{
    ExecutorSpec, NeedOn, NodeOrder, NodesSpec, Phase, Unavailable, WorkflowSource, API_VERSION,
    BACKOFF_FIELDS, EXECUTOR_FIELDS, GROUP_FIELDS, KIND, MEMBER_FIELDS, METADATA_FIELDS,
    NEED_FIELDS, NODES_FIELDS, ON_FAILURE_FIELDS, ORDER_FIELDS, PARAM_FIELDS, RETRY_FIELDS,
    SPEC_FIELDS, STEP_FIELDS, TOP_FIELDS,
};
use read::{annotations, boolean, count, describe, get, short, string, unknown_keys, wrong};

/// The executors every workflow may name; `spec.executors` adds more.
pub const EXECUTORS: &[&str] = &["global", "per-node", "cluster-nodes"];

/// The longest `metadata.name`: run ids start with it and name directories.
pub const MAX_NAME: usize = 63;

/// One problem in a workflow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The workflow file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The step the problem is in.
    pub step: Option<String>,
    /// The field of the step or spec.
    pub field: Option<String>,
    /// What is wrong and what to change.
    pub message: String,
}

impl Problem {
    /// A problem about the file as a whole.
    pub fn new(source: &WorkflowSource, message: impl Into<String>) -> Self {
        Problem {
            file: source.path.clone(),
            line: None,
            column: None,
            step: None,
            field: None,
            message: message.into(),
        }
    }

    /// A problem in a field of a step, at the line of the step's id.
    pub fn in_step(
        source: &WorkflowSource,
        step: &str,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            line: source.line_of_step(step),
            step: Some(step.to_owned()),
            field: (!field.is_empty()).then(|| field.to_owned()),
            ..Problem::new(source, message)
        }
    }

    /// A problem in a field outside the steps (`spec.concurrency`), at the
    /// line of the field's last key.
    pub fn in_field(source: &WorkflowSource, field: &str, message: impl Into<String>) -> Self {
        let key = field
            .rsplit('.')
            .next()
            .unwrap_or(field)
            .split('[')
            .next()
            .unwrap_or(field);
        Problem {
            line: source.line_of_key(key),
            field: Some(field.to_owned()),
            ..Problem::new(source, message)
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": ")?;
        match (&self.step, &self.field) {
            (Some(step), Some(field)) => write!(f, "step `{step}`, field `{field}`: ")?,
            (Some(step), None) => write!(f, "step `{step}`: ")?,
            (None, Some(field)) => write!(f, "field `{field}`: ")?,
            (None, None) => {}
        }
        write!(f, "{}", self.message)
    }
}

/// A workflow that cannot run, with every problem found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Invalid {
    /// The problems, in file order where known.
    pub problems: Vec<Problem>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Validates a workflow and builds its plan.
pub fn validate(source: &WorkflowSource, registry: &TaskRegistry) -> Result<Plan, Invalid> {
    check(source, &read(source)?, registry)
}

/// Parses a workflow's text into its tree, merge keys applied: the part of
/// [`validate`] that a resume can skip by loading the tree a run keeps
/// ([`crate::store::RunStore::parsed_workflow`]).
pub fn read(source: &WorkflowSource) -> Result<Value, Invalid> {
    let mut root: Value = match serde_yaml::from_str(&source.text) {
        Ok(v) => v,
        Err(e) => {
            return Err(Invalid {
                problems: vec![syntax_problem(source, &e)],
            })
        }
    };
    if let Err(e) = root.apply_merge() {
        return Err(Invalid {
            problems: vec![Problem {
                line: source.line_of_key("<<"),
                ..Problem::new(
                    source,
                    format!(
                        "a merge key `<<` cannot be applied ({}); `<<` takes an alias of a mapping, like `<<: *defaults`, or a list of them",
                        yaml_message(&e)
                    ),
                )
            }],
        });
    }
    Ok(root)
}

/// Checks a workflow's tree (from [`read`]) and builds its plan; `source`
/// gives the file and the lines that problems point at.
pub fn check(
    source: &WorkflowSource,
    root: &Value,
    registry: &TaskRegistry,
) -> Result<Plan, Invalid> {
    let kinds: Vec<&'static str> = ["gate", "approval", "group"]
        .into_iter()
        .chain(registry.names())
        .collect();
    let mut v = Validator {
        source,
        registry,
        problems: Vec::new(),
        warnings: Vec::new(),
        step_lines: source.entries("id"),
        kinds: &kinds,
        suggest_budget: SUGGEST_BUDGET,
    };
    let plan = v.workflow(root);
    match plan {
        Some(mut plan) if v.problems.is_empty() => {
            plan.warnings = v.warnings;
            Ok(plan)
        }
        _ => {
            v.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            Err(Invalid {
                problems: v.problems,
            })
        }
    }
}

/// A YAML syntax error, at its line. serde_yaml places a duplicate key at
/// the start of its mapping (1:1 for a top-level one): find the repeated key.
fn syntax_problem(source: &WorkflowSource, e: &serde_yaml::Error) -> Problem {
    let location = e.location();
    let mut line = location.as_ref().map(|l| l.line());
    let mut column = location.as_ref().map(|l| l.column());
    let mut message = yaml_message(e);
    if let Some(key) = message
        .strip_prefix("duplicate entry with key \"")
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
    {
        let from = line.unwrap_or(1).saturating_sub(1);
        let found = duplicate_key_lines(&source.text, &key, from);
        if let [first, second, ..] = found[..] {
            line = Some(second);
            column = None;
            message = format!(
                "the key `{key}` is written twice in one mapping (lines {first} and {second}); keep one"
            );
        } else {
            message = format!("the key `{key}` is written twice in one mapping; keep one");
        }
    }
    Problem {
        line,
        column,
        ..Problem::new(source, message)
    }
}

/// The lines (from line index `from`) where `key:` starts an entry, at the
/// indentation of its first such entry.
fn duplicate_key_lines(text: &str, key: &str, from: usize) -> Vec<usize> {
    let pattern = format!("{key}:");
    let mut indent = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(from) {
        let body = line.trim_start();
        let at = line.len() - body.len();
        let body = body.strip_prefix("- ").unwrap_or(body);
        let starts = body.starts_with(&pattern)
            || body.starts_with(&format!("\"{key}\":"))
            || body.starts_with(&format!("'{key}':"));
        if starts && indent.is_none_or(|d| d == at) {
            indent = Some(at);
            out.push(i + 1);
        }
    }
    out
}

fn yaml_message(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    // serde_yaml appends "at line L column C"; the location is reported separately.
    match text.find(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// How many id comparisons "did you mean" may make in one validation: past
/// it, unknown ids get no suggestion, so that a huge workflow full of
/// unknown needs is still judged in moments.
const SUGGEST_BUDGET: usize = 200_000;

/// A step's `when`, which sees the run's params and the upstream steps.
fn compile_when(text: &str) -> Result<kpilot_expr::Expr, kpilot_expr::ExprError> {
    kpilot_expr::Expr::compile(text, &["params", "steps"])
}

struct Validator<'a> {
    source: &'a WorkflowSource,
    registry: &'a TaskRegistry,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// The lines of every `id:` entry, by id.
    step_lines: HashMap<&'a str, Vec<usize>>,
    /// The bodies a step can have: the built-in ones and the registry's kinds.
    kinds: &'a [&'static str],
    /// What is left of [`SUGGEST_BUDGET`].
    suggest_budget: usize,
}

/// Where a step's problems point: its id and the line of that id.
#[derive(Debug, Clone)]
struct At {
    step: String,
    line: Option<usize>,
}

/// A step after its own fields were read, before edges are resolved.
struct Parsed {
    at: At,
    phase: Phase,
    needs: Vec<(String, NeedOn)>,
    when: Option<String>,
    executor: Option<String>,
    nodes: Option<NodesSpec>,
    retry: Option<RetryPolicy>,
    timeout: Option<Duration>,
    repair: Option<String>,
    idempotent: Option<bool>,
    annotations: BTreeMap<String, String>,
    body: Option<Body>,
    /// A group's members, parsed with their full ids (`GROUP.MEMBER`).
    members: Vec<Parsed>,
    /// The group this step is a member of, by id.
    member_of: Option<String>,
}

/// What a member of a group takes from its group while it is read.
struct MemberOf {
    group: String,
    phase: Phase,
}

impl Validator<'_> {
    fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(Problem::new(self.source, message));
    }

    /// A problem in a field outside the steps, named as the user wrote it.
    fn field_problem(&mut self, field: &str, message: impl Into<String>) {
        self.problems
            .push(Problem::in_field(self.source, field, message));
    }

    fn at(&mut self, at: &At, field: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line: at.line,
            step: Some(at.step.clone()),
            field: (!field.is_empty()).then(|| field.to_owned()),
            ..Problem::new(self.source, message)
        });
    }

    /// Reports the unknown keys of a mapping outside the steps; `prefix`
    /// names the mapping (`spec.`).
    fn unknown_fields(&mut self, prefix: &str, map: &Mapping, known: &[&str]) {
        for (key, message) in unknown_keys(map, known) {
            self.field_problem(&format!("{prefix}{key}"), message);
        }
    }

    /// Reports the unknown keys of a mapping in a step; `prefix` names it (`retry.`).
    fn unknown_step_fields(&mut self, at: &At, prefix: &str, map: &Mapping, known: &[&str]) {
        for (key, message) in unknown_keys(map, known) {
            self.at(at, &format!("{prefix}{key}"), message);
        }
    }

    /// A mapping field outside the steps; `None` (reported) when it is something else.
    fn mapping<'v>(&mut self, field: &str, v: &'v Value, hint: &str) -> Option<&'v Mapping> {
        match v.as_mapping() {
            Some(m) => Some(m),
            None => {
                self.field_problem(field, wrong(v, &format!("a mapping ({hint})")));
                None
            }
        }
    }

    fn workflow(&mut self, root: &Value) -> Option<Plan> {
        let Some(top) = root.as_mapping() else {
            self.problem(format!(
                "the file is {}, but a workflow is a mapping of apiVersion, kind, metadata and spec",
                describe(root)
            ));
            return None;
        };
        self.unknown_fields("", top, TOP_FIELDS);
        for (key, want) in [("apiVersion", API_VERSION), ("kind", KIND)] {
            match get(top, key).map(|v| string(v, &format!("`{want}`"))) {
                None => {
                    self.field_problem(key, format!("`{key}` is missing; write `{key}: {want}`"))
                }
                Some(Err(e)) => self.field_problem(key, format!("{e}; write `{key}: {want}`")),
                Some(Ok(s)) if s != want => self.field_problem(
                    key,
                    format!("`{key}` is `{}`; write `{key}: {want}`", short(&s)),
                ),
                Some(Ok(_)) => {}
            }
        }
        let (name, description) = self.metadata(get(top, "metadata"));
        let spec = match get(top, "spec") {
            None => {
                self.problem("`spec` is missing; a workflow needs `spec: {steps: [...]}`");
                return None;
            }
            Some(v) => self.mapping(
                "spec",
                v,
                "params, concurrency, executors, inventory and steps",
            )?,
        };
        self.unknown_fields("spec.", spec, SPEC_FIELDS);
        let concurrency = match get(spec, "concurrency") {
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
            Some(v) => match count(v, 1, "a whole number of 1 or more") {
                Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
                Err(e) => {
                    self.field_problem(
                        "spec.concurrency",
                        format!("{e}; write how many steps may run at once, like `concurrency: 4`"),
                    );
                    1
                }
            },
        };
        let inventory =
            match get(spec, "inventory").map(|v| string(v, "the path of an inventory file")) {
                None => None,
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    self.field_problem("spec.inventory", e);
                    None
                }
            };
        let restore_on_failure = self.on_failure(get(spec, "onFailure"));
        let params = self.params(get(spec, "params"));
        let executors = self.executors(get(spec, "executors"));
        let param_names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
        let raw_steps: &[Value] = match get(spec, "steps") {
            None => {
                self.field_problem(
                    "spec.steps",
                    "`spec.steps` is missing; a workflow needs at least one step",
                );
                &[]
            }
            Some(Value::Sequence(s)) => {
                if s.is_empty() {
                    self.field_problem(
                        "spec.steps",
                        "spec.steps is empty; a workflow needs at least one step",
                    );
                }
                s
            }
            Some(other) => {
                self.field_problem("spec.steps", wrong(other, "a list of steps (`- id: ...`)"));
                &[]
            }
        };

        let mut parsed: Vec<Parsed> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut occurrences: HashMap<&str, usize> = HashMap::new();
        for (i, raw) in raw_steps.iter().enumerate() {
            let Some(mut step) = self.step(i, raw, &param_names, &mut occurrences, None) else {
                continue;
            };
            let members = std::mem::take(&mut step.members);
            if let Some(&first) = index.get(&step.at.step) {
                let lines = match (parsed[first].at.line, step.at.line) {
                    (Some(a), Some(b)) => format!(": lines {a} and {b}"),
                    _ => String::new(),
                };
                let id = step.at.step.clone();
                self.at(
                    &step.at,
                    "id",
                    format!(
                        "step id `{id}` is used twice{lines}; rename one (step ids must be unique)"
                    ),
                );
                continue;
            }
            index.insert(step.at.step.clone(), parsed.len());
            parsed.push(step);
            for member in members {
                if index.contains_key(&member.at.step) {
                    let id = member.at.step.clone();
                    self.at(
                        &member.at,
                        "id",
                        format!("member id `{id}` is used twice in its group; rename one"),
                    );
                    continue;
                }
                index.insert(member.at.step.clone(), parsed.len());
                parsed.push(member);
            }
        }

        let ids: Vec<String> = parsed.iter().map(|p| p.at.step.clone()).collect();
        let mut edges = Vec::new();
        let mut steps = Vec::new();
        // Each body moves into its planned step (a task's body holds its spec).
        let mut bodies: Vec<Option<Body>> = parsed.iter_mut().map(|p| p.body.take()).collect();
        for (i, p) in parsed.iter().enumerate() {
            let at = &p.at;
            let id = at.step.as_str();
            let mut needs: Vec<Need> = Vec::new();
            let mut member_needs: Vec<Need> = Vec::new();
            if let Some(group) = &p.member_of {
                for (need, on) in &p.needs {
                    let full = format!("{group}.{need}");
                    match index.get(full.as_str()) {
                        Some(&j) if j == i => self.at(at, "needs", "a step cannot need itself"),
                        Some(&j) if member_needs.iter().any(|n| n.step == j) => self.at(
                            at,
                            "needs",
                            format!("needs `{need}` twice; list each step once"),
                        ),
                        Some(&j) => {
                            // In the graph too, so that `graph` draws each
                            // node's sequence and a cycle in it is found.
                            edges.push((j, i, *on));
                            member_needs.push(Need { step: j, on: *on });
                        }
                        None => {
                            let siblings: Vec<&str> = parsed
                                .iter()
                                .filter(|q| q.member_of.as_deref() == Some(group))
                                .filter_map(|q| q.at.step.split_once('.').map(|(_, m)| m))
                                .collect();
                            self.at(at, "needs", format!("needs `{need}`, which is not a step of group `{group}`; a member needs only members of its own group ({}), on the same node", siblings.join(", ")));
                        }
                    }
                }
            }
            let outer_needs: &[(String, NeedOn)] =
                if p.member_of.is_some() { &[] } else { &p.needs };
            for (need, on) in outer_needs {
                match index.get(need.as_str()) {
                    Some(&j) if parsed[j].member_of.is_some() => self.at(
                        at,
                        "needs",
                        format!("needs `{need}`, a member of group `{}`; a step outside the group needs the whole group: write `needs: [{}]`", parsed[j].member_of.as_deref().unwrap_or_default(), parsed[j].member_of.as_deref().unwrap_or_default()),
                    ),
                    None => {
                        let near = if self.suggest_budget >= ids.len() {
                            self.suggest_budget -= ids.len();
                            closest(need, ids.iter().map(String::as_str), MAX_SUGGESTIONS)
                        } else {
                            Vec::new()
                        };
                        let hint = if near.is_empty() {
                            "no step has a similar id; check its spelling".to_owned()
                        } else {
                            format!(
                                "did you mean {}?",
                                near.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                            )
                        };
                        self.at(at, "needs", format!("needs `{need}`, which is not a step of this workflow; {hint}"));
                    }
                    Some(&j) if j == i => self.at(at, "needs", "a step cannot need itself"),
                    Some(&j) if parsed[j].phase == Phase::Repair => self.at(
                        at,
                        "needs",
                        format!("needs `{need}`, a repair step; repair steps run only as the `repair` of a failed step, so nothing can wait for them"),
                    ),
                    Some(&j) => match needs.iter().find(|n| n.step == j) {
                        Some(n) if n.on == *on => self.at(
                            at,
                            "needs",
                            format!("needs `{need}` twice; list each step once"),
                        ),
                        Some(n) => self.at(
                            at,
                            "needs",
                            format!(
                                "needs `{need}` both on {} and on {}, which cannot both hold, so the step would always be skipped; keep one (`on: always` runs it whatever `{need}` ends with)",
                                n.on.as_str(),
                                on.as_str()
                            ),
                        ),
                        None => {
                            edges.push((j, i, *on));
                            needs.push(Need { step: j, on: *on });
                        }
                    },
                }
            }
            let repair = match &p.repair {
                None => None,
                Some(r) => match index.get(r.as_str()) {
                    None => {
                        let near = nearest(r, ids.iter().map(String::as_str))
                            .map(|n| format!(" (did you mean `{n}`?)"))
                            .unwrap_or_default();
                        self.at(
                            at,
                            "repair",
                            format!("`{r}` is not a step of this workflow{near}"),
                        );
                        None
                    }
                    Some(&j) if parsed[j].phase != Phase::Repair => {
                        self.at(
                            at,
                            "repair",
                            format!("`{r}` is in phase {}; a step named by `repair` must have `phase: repair`", parsed[j].phase.as_str()),
                        );
                        None
                    }
                    Some(&j) => Some(j),
                },
            };
            if p.phase == Phase::Repair {
                if !p.needs.is_empty() {
                    self.at(at, "needs", "a repair step runs only when the step it repairs fails; remove its `needs`");
                }
                if p.repair.is_some() {
                    self.at(
                        at,
                        "repair",
                        "a repair step cannot have a repair of its own",
                    );
                }
            }
            let when = p.when.as_deref().and_then(|w| match compile_when(w) {
                Ok(e) => Some(e),
                Err(e) => {
                    self.at(at, "when", e.to_string());
                    None
                }
            });
            let group_index = p.member_of.as_deref().and_then(|g| index.get(g).copied());
            let group_executor = group_index
                .and_then(|g| parsed[g].executor.clone())
                .unwrap_or_else(|| "global".to_owned());
            let executor = match (&p.member_of, &p.executor) {
                (Some(_), Some(e)) if e == "global" => "global".to_owned(),
                (Some(_), Some(e)) => {
                    self.at(at, "executor", format!("`executor: {e}`: a member of a group runs on the group's nodes, through the group's executor `{group_executor}`; only `executor: global` is allowed, to run the member in kpilot for each node"));
                    group_executor.clone()
                }
                (Some(_), None) => group_executor.clone(),
                (None, e) => e.clone().unwrap_or_else(|| "global".to_owned()),
            };
            let pool = executors.iter().find(|e| e.name == executor);
            let placement = match (executor.as_str(), pool) {
                (_, Some(pool)) if pool.per_node => Placement::EveryNode,
                (_, Some(_)) => Placement::PoolMember,
                ("per-node" | "cluster-nodes", None) => Placement::EveryNode,
                _ => Placement::Global,
            };
            if pool.is_none() && !EXECUTORS.contains(&executor.as_str()) {
                let mut known: Vec<&str> = EXECUTORS.to_vec();
                known.extend(executors.iter().map(|e| e.name.as_str()));
                let near = nearest(&executor, known.iter().copied())
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                self.at(
                    at,
                    "executor",
                    format!(
                        "unknown executor `{executor}`{near}; known executors: {}; declare pools in spec.executors",
                        known.join(", ")
                    ),
                );
            }
            match placement {
                _ if p.repair.is_none() => {}
                Placement::Global => {}
                Placement::EveryNode => self.at(
                    at,
                    "repair",
                    "a step run on every node cannot have a repair yet; run the fix as a step (not in phase repair) that needs this one `on: failure`, or use retry",
                ),
                Placement::PoolMember => self.at(
                    at,
                    "repair",
                    format!("a step of pool `{executor}` cannot have a repair yet (only steps of executor global can); run the fix as a step (not in phase repair) that needs this one `on: failure`, or use retry"),
                ),
            }
            let placement = if p.member_of.is_some() {
                Placement::EveryNode
            } else {
                placement
            };
            if matches!(bodies[i], Some(Body::Group)) && placement != Placement::EveryNode {
                self.at(
                    at,
                    "executor",
                    format!("a group rolls its steps over nodes, but executor `{executor}` runs a step once; write `executor: per-node` (or a pool with `perNode: true`)"),
                );
            }
            let nodes = match group_index {
                Some(g) => parsed[g].nodes.clone().unwrap_or_default(),
                None => p.nodes.clone().unwrap_or_default(),
            };
            if p.nodes.is_some() && placement != Placement::EveryNode {
                self.at(
                    at,
                    "nodes",
                    format!("`nodes` applies to steps that fan out over nodes; executor `{executor}` runs the step once (use `executor: per-node`, or a pool with `perNode: true`)"),
                );
            }
            let fan_out = FanOut {
                selector: nodes.selector.clone(),
                max_parallel: nodes.max_parallel.or(pool.and_then(|p| p.concurrency)),
                max_failures: nodes
                    .max_failures
                    .or(pool.and_then(|p| p.max_failures))
                    .unwrap_or(0),
                max_unavailable: nodes.max_unavailable,
                order: nodes.order.clone(),
            };
            let Some(body) = bodies[i].take() else {
                continue;
            };
            let group = match (&body, &p.member_of) {
                (Body::Group, _) => Some(GroupRole::Group {
                    members: (0..parsed.len())
                        .filter(|&j| parsed[j].member_of.as_deref() == Some(id))
                        .collect(),
                }),
                (_, Some(_)) => group_index.map(|g| GroupRole::Member {
                    group: g,
                    needs: member_needs.clone(),
                }),
                _ => None,
            };
            if matches!(body, Body::Group) && p.idempotent.is_some() {
                self.at(
                    at,
                    "idempotent",
                    "a group is as idempotent as its members; set `idempotent` on the members",
                );
            }
            let idempotent = p.idempotent.unwrap_or(match &body {
                Body::Gate | Body::Approval { .. } | Body::Group => true,
                Body::Task { kind, .. } => self
                    .registry
                    .get(kind)
                    .is_some_and(|k| k.idempotent_by_default()),
            });
            let Ok(step_id) = StepId::parse(id) else {
                continue;
            };
            steps.push(PlannedStep {
                id: step_id,
                phase: p.phase,
                needs,
                when,
                executor,
                placement,
                fan_out,
                body,
                retry: p.retry,
                timeout: p.timeout,
                repair,
                idempotent,
                annotations: p.annotations.clone(),
                group,
            });
        }

        for p in &parsed {
            if p.phase == Phase::Repair
                && !parsed
                    .iter()
                    .any(|q| q.repair.as_deref() == Some(p.at.step.as_str()))
            {
                self.at(
                    &p.at,
                    "phase",
                    "this repair step is not named by any step's `repair`, so it would never run; add `repair: ID` to the step it repairs, or change its phase",
                );
            }
        }
        let dag = match Dag::new(&ids, &edges) {
            Ok(dag) => Some(dag),
            Err(cycles) => {
                for cycle in cycles {
                    self.problem(format!(
                        "the steps {} need each other in a cycle; remove one of their `needs` so the graph has no cycle",
                        cycle.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                    ));
                }
                None
            }
        };
        if !self.problems.is_empty() || steps.len() != parsed.len() {
            return None;
        }
        let by_id = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str().to_owned(), i))
            .collect();
        Some(Plan {
            name: name?,
            description,
            by_id,
            steps,
            dag: dag?,
            concurrency,
            params,
            executors,
            inventory,
            restore_on_failure,
            warnings: Vec::new(),
        })
    }

    /// `spec.onFailure`: `{restore: true}` undoes what the run's ledger
    /// holds (nodes it cordoned) when the run fails or blocks.
    fn on_failure(&mut self, v: Option<&Value>) -> bool {
        let Some(v) = v else { return false };
        let Some(map) = self.mapping("spec.onFailure", v, "restore") else {
            return false;
        };
        self.unknown_fields("spec.onFailure.", map, ON_FAILURE_FIELDS);
        match get(map, "restore").map(boolean) {
            None => false,
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                self.field_problem(
                    "spec.onFailure.restore",
                    format!("{e}; write `onFailure: {{restore: true}}` to uncordon the nodes the run cordoned when it fails"),
                );
                false
            }
        }
    }

    /// `metadata`: the name (a DNS-label-like word, since run ids start with
    /// it) and the description.
    fn metadata(&mut self, v: Option<&Value>) -> (Option<String>, Option<String>) {
        let hint = "write `metadata: {name: upgrade-1-16}`";
        let Some(v) = v else {
            self.problem(format!("`metadata` is missing; {hint}"));
            return (None, None);
        };
        let Some(m) = self.mapping("metadata", v, hint) else {
            return (None, None);
        };
        self.unknown_fields("metadata.", m, METADATA_FIELDS);
        if let Some(Err(e)) = get(m, "annotations").map(annotations) {
            self.field_problem("metadata.annotations", e);
        }
        let description = match get(m, "description").map(|d| string(d, "a text")) {
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                self.field_problem("metadata.description", e);
                None
            }
            None => None,
        };
        let name_rule = "use 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit, like `upgrade-1-16`";
        let name = match m.get("name") {
            None => {
                self.field_problem(
                    "metadata.name",
                    format!("`metadata.name` is missing; {hint}"),
                );
                None
            }
            Some(Value::String(s)) => {
                let ok = !s.is_empty()
                    && s.len() <= MAX_NAME
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !s.starts_with('-')
                    && !s.ends_with('-');
                if ok {
                    Some(s.clone())
                } else if s.trim().is_empty() {
                    self.field_problem(
                        "metadata.name",
                        format!("metadata.name is empty; give the workflow a name: {name_rule}"),
                    );
                    None
                } else {
                    self.field_problem(
                        "metadata.name",
                        format!("`{}` is not a valid workflow name (run ids start with it, and kpilot prints them in commands to type): {name_rule}", short(s)),
                    );
                    None
                }
            }
            Some(other) => {
                self.field_problem(
                    "metadata.name",
                    format!("{}; {name_rule}", wrong(other, "a name")),
                );
                None
            }
        };
        (name, description)
    }

    fn params(&mut self, v: Option<&Value>) -> Vec<PlannedParam> {
        let hint = "write `params: [{name: to, default: \"1.16\", description: ...}]`";
        let items: &[Value] = match v {
            None => &[],
            Some(Value::Sequence(s)) => s,
            Some(other) => {
                self.field_problem("spec.params", format!("{}; {hint}", wrong(other, "a list")));
                &[]
            }
        };
        let mut out: Vec<PlannedParam> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(m) = item.as_mapping() else {
                self.field_problem(
                    &format!("spec.params[{i}]"),
                    format!("{}; {hint}", wrong(item, "a mapping")),
                );
                continue;
            };
            let name = match get(m, "name").map(|n| string(n, "a name")) {
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    self.field_problem(&format!("spec.params[{i}].name"), format!("{e}; {hint}"));
                    continue;
                }
                None => {
                    self.field_problem(
                        &format!("spec.params[{i}]"),
                        format!("the param has no `name`; {hint}"),
                    );
                    continue;
                }
            };
            let field = format!("spec.params[{name}]");
            let line = self.source.lines_of_entry("name", &name).into_iter().next();
            let report = |this: &mut Self, message: String| {
                this.problems.push(Problem {
                    line,
                    field: Some(field.clone()),
                    ..Problem::new(this.source, message)
                });
            };
            for (key, message) in unknown_keys(m, PARAM_FIELDS) {
                report(self, format!("`{key}`: {message}"));
            }
            let name_ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && name.starts_with(|c: char| c.is_ascii_alphabetic());
            if !name_ok {
                report(self, format!(
                    "param name `{}` is not valid; use letters, digits, `-` and `_`, starting with a letter",
                    short(&name)
                ));
            }
            if out.iter().any(|q| q.name == name) {
                report(self, format!("param `{name}` is declared twice; keep one"));
            } else if let Some(q) = out
                .iter()
                .find(|q| param_env_name(&q.name) == param_env_name(&name))
            {
                report(self, format!(
                    "params `{}` and `{name}` both reach scripts as the environment variable {}, so one would hide the other; rename one",
                    q.name,
                    param_env_name(&name)
                ));
            }
            let default = match get(m, "default") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Bool(b)) => Some(b.to_string()),
                Some(Value::Number(n)) if !n.is_f64() => Some(n.to_string()),
                Some(Value::Number(n)) => {
                    report(self, format!(
                        "param `{name}` has a default that YAML reads as the number {n} (1.10 would become 1.1); quote it as a string, like default: \"1.16\""
                    ));
                    None
                }
                Some(other) => {
                    report(self, format!(
                        "param `{name}`: its default is {}; write a plain value as a string, like default: \"1.16\"",
                        describe(other)
                    ));
                    None
                }
            };
            if default.as_deref().is_some_and(|d| d.contains('\0')) {
                report(self, format!("param `{name}`: its default holds a NUL character, which no process can receive; remove it"));
            }
            let description = match get(m, "description").map(|d| string(d, "a text")) {
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => {
                    report(self, format!("`description`: {e}"));
                    None
                }
                None => None,
            };
            out.push(PlannedParam {
                name,
                default,
                description,
            });
        }
        out
    }

    fn executors(&mut self, v: Option<&Value>) -> Vec<ExecutorSpec> {
        let hint = "write `executors: [{name: workers, selector: role=worker, perNode: true}]`";
        let items: &[Value] = match v {
            None => &[],
            Some(Value::Sequence(s)) => s,
            Some(other) => {
                self.field_problem(
                    "spec.executors",
                    format!("{}; {hint}", wrong(other, "a list")),
                );
                &[]
            }
        };
        let mut out: Vec<ExecutorSpec> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(m) = item.as_mapping() else {
                self.field_problem(
                    &format!("spec.executors[{i}]"),
                    format!("{}; {hint}", wrong(item, "a mapping")),
                );
                continue;
            };
            let name = match get(m, "name").map(|n| string(n, "a name")) {
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    self.field_problem(
                        &format!("spec.executors[{i}].name"),
                        format!("{e}; {hint}"),
                    );
                    continue;
                }
                None => {
                    self.field_problem(
                        &format!("spec.executors[{i}]"),
                        format!("the pool has no `name`; {hint}"),
                    );
                    continue;
                }
            };
            let line = self.source.lines_of_entry("name", &name).into_iter().next();
            let report = |this: &mut Self, key: &str, message: String| {
                this.problems.push(Problem {
                    line,
                    field: Some(format!(
                        "spec.executors[{name}]{}{key}",
                        if key.is_empty() { "" } else { "." }
                    )),
                    ..Problem::new(this.source, message)
                });
            };
            for (key, message) in unknown_keys(m, EXECUTOR_FIELDS) {
                report(self, &key, message);
            }
            if EXECUTORS.contains(&name.as_str()) || out.iter().any(|o| o.name == name) {
                report(
                    self,
                    "name",
                    format!(
                    "the name `{name}` is taken; give each pool a name of its own, other than {}",
                    EXECUTORS.join(" and ")
                ),
                );
            }
            let text = |this: &mut Self, key: &str, want: &str| match get(m, key)
                .map(|v| string(v, want))
            {
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    report(this, key, e);
                    None
                }
                None => None,
            };
            let selector = text(self, "selector", "a label selector, like `role=worker`");
            if let (Some(s), Some(check)) = (&selector, self.registry.selector_check()) {
                if let Err(e) = check(s) {
                    report(self, "selector", e);
                }
            }
            let inventory = text(self, "inventory", "the path of an inventory file");
            let nodes = match get(m, "nodes") {
                None => Vec::new(),
                Some(Value::Sequence(items)) => items
                    .iter()
                    .filter_map(|n| match string(n, "a node name") {
                        Ok(s) => Some(s),
                        Err(e) => {
                            report(self, "nodes", e);
                            None
                        }
                    })
                    .collect(),
                Some(other) => {
                    report(self, "nodes", wrong(other, "a list of node names"));
                    Vec::new()
                }
            };
            let per_node = match get(m, "perNode").map(boolean) {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    report(self, "perNode", e);
                    false
                }
                None => false,
            };
            let number = |this: &mut Self, key: &str, min: u64| match get(m, key)
                .map(|v| count(v, min, &format!("a whole number of {min} or more")))
            {
                Some(Ok(n)) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Some(Err(e)) => {
                    report(this, key, e);
                    None
                }
                None => None,
            };
            let concurrency = number(self, "concurrency", 1);
            let max_failures = number(self, "maxFailures", 0);
            out.push(ExecutorSpec {
                name,
                selector,
                nodes,
                inventory,
                per_node,
                concurrency,
                max_failures,
            });
        }
        out
    }

    fn step<'t>(
        &mut self,
        i: usize,
        raw: &'t Value,
        params: &[String],
        occurrences: &mut HashMap<&'t str, usize>,
        member_of: Option<&MemberOf>,
    ) -> Option<Parsed> {
        let Some(map) = raw.as_mapping() else {
            self.field_problem(
                "spec.steps",
                format!(
                    "step {} is {}, but a step is a mapping: `- id: ...` with its fields",
                    i + 1,
                    describe(raw)
                ),
            );
            return None;
        };
        let written = match get(map, "id") {
            Some(Value::String(s)) => s.as_str(),
            None => {
                self.field_problem(
                    "spec.steps",
                    format!(
                        "step {} has no `id`; give it one, like `id: drain-nodes`",
                        i + 1
                    ),
                );
                return None;
            }
            Some(other) => {
                self.field_problem(
                    "spec.steps",
                    format!("step {}: its `id` is {}; write the id as text, like `id: drain-nodes` (quote a number: `id: \"1\"`)", i + 1, describe(other)),
                );
                return None;
            }
        };
        let seen = occurrences.entry(written).or_default();
        let lines = self
            .step_lines
            .get(written)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let line = lines.get(*seen).or(lines.first()).copied();
        *seen += 1;
        let at = At {
            step: match member_of {
                Some(m) => format!("{}.{written}", m.group),
                None => written.to_owned(),
            },
            line,
        };
        if written.contains('.') {
            self.at(&at, "id", format!("`{written}` is not a valid step id: `.` joins a group's id and its member's (`GROUP.MEMBER`) in the store and on the command line; use `-` instead"));
        } else if let Err(e) = StepId::parse(written) {
            self.at(&at, "id", e);
        }

        let kinds = self.kinds;
        let mut bodies: Vec<(&str, &Value)> = Vec::new();
        let mut unknown = false;
        for (key, value) in map {
            let Some(key) = key.as_str() else {
                self.at(
                    &at,
                    "",
                    format!("a key is {}, not a field name", describe(key)),
                );
                unknown = true;
                continue;
            };
            if member_of.is_some() && STEP_FIELDS.contains(&key) && !MEMBER_FIELDS.contains(&key) {
                self.at(
                    &at,
                    key,
                    format!("a member of a group cannot have `{key}`: the group's `executor` and `nodes` choose the nodes and how they roll; give the member only {}", MEMBER_FIELDS.join(", ")),
                );
                continue;
            }
            if STEP_FIELDS.contains(&key) {
                continue;
            }
            if kinds.contains(&key) {
                bodies.push((key, value));
            } else {
                unknown = true;
                let hint = nearest(
                    key,
                    STEP_FIELDS.iter().copied().chain(kinds.iter().copied()),
                )
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
                self.at(
                    &at,
                    key,
                    format!(
                        "unknown field{hint}; a step has {} and exactly one body: {}",
                        STEP_FIELDS.join(", "),
                        kinds.join(", ")
                    ),
                );
            }
        }

        // Built only for a message: most steps never need it.
        let phases = || Phase::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>();
        let phase = match get(map, "phase") {
            None if member_of.is_some() => member_of.map(|m| m.phase),
            None => {
                self.at(
                    &at,
                    "phase",
                    format!(
                        "the step has no `phase`; write one of {}",
                        phases().join(", ")
                    ),
                );
                None
            }
            Some(Value::String(s)) => match Phase::ALL.iter().find(|p| p.as_str() == s) {
                Some(p) => Some(*p),
                None => {
                    let near = nearest(s, phases())
                        .map(|n| format!(" (did you mean `{n}`?)"))
                        .unwrap_or_default();
                    self.at(
                        &at,
                        "phase",
                        format!(
                            "`{}` is not a phase{near}; use one of {}",
                            short(s),
                            phases().join(", ")
                        ),
                    );
                    None
                }
            },
            Some(other) => {
                self.at(
                    &at,
                    "phase",
                    format!(
                        "{}; use one of {}",
                        wrong(other, "a phase"),
                        phases().join(", ")
                    ),
                );
                None
            }
        };

        let body = match bodies.len() {
            0 if unknown => None,
            0 => {
                self.at(
                    &at,
                    "",
                    format!(
                        "the step has no body; give it exactly one of: {}",
                        kinds.join(", ")
                    ),
                );
                None
            }
            1 if bodies[0].0 == "group" => {
                if member_of.is_some() {
                    self.at(&at, "group", "a group cannot be a member of another group; list its steps in the outer group");
                    None
                } else {
                    Some(Body::Group)
                }
            }
            1 => {
                let (key, value) = bodies[0];
                self.body(&at, key, value, params)
            }
            _ => {
                let keys: Vec<String> = bodies.iter().map(|(k, _)| format!("`{k}`")).collect();
                self.at(&at, "", format!("the step has {} bodies ({}); keep exactly one, and split the rest into steps of their own", keys.len(), keys.join(", ")));
                None
            }
        };

        let needs = self.needs(&at, get(map, "needs"));
        let text = |this: &mut Self, key: &str, want: &str| match get(map, key) {
            None => None,
            Some(v) => match string(v, want) {
                Ok(s) => Some(s),
                Err(e) => {
                    this.at(&at, key, e);
                    None
                }
            },
        };
        let when = match get(map, "when") {
            Some(Value::Bool(b)) => Some(b.to_string()),
            _ => text(
                self,
                "when",
                "a CEL expression in a string, like `when: \"params.to != ''\"`",
            ),
        };
        let executor = text(self, "executor", "the name of an executor, like `per-node`");
        let repair = text(self, "repair", "the id of a step in phase repair");
        let timeout = text(self, "timeout", "a duration like 90s")
            .and_then(|t| self.duration(&at, "timeout", &t));
        let idempotent = match get(map, "idempotent").map(boolean) {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                self.at(&at, "idempotent", e);
                None
            }
            None => None,
        };
        let nodes = get(map, "nodes").and_then(|v| self.nodes(&at, v));
        let retry = get(map, "retry").and_then(|v| self.retry(&at, v));
        let annotations = match get(map, "annotations").map(annotations) {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                self.at(&at, "annotations", e);
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        };
        let phase = phase.unwrap_or(Phase::Upgrade);
        let members = match (&body, get(map, "group")) {
            (Some(Body::Group), Some(v)) => self.members(&at, v, phase, params, occurrences),
            _ => Vec::new(),
        };
        Some(Parsed {
            at,
            // A bad phase is reported; the step is still known to those that need it.
            phase,
            needs,
            when,
            executor,
            nodes,
            retry,
            timeout,
            repair,
            idempotent,
            annotations,
            body,
            members,
            member_of: member_of.map(|m| m.group.clone()),
        })
    }

    /// `group: {steps: [...]}`: the members, each read as a step with the
    /// group's phase unless it gives its own.
    fn members<'t>(
        &mut self,
        at: &At,
        v: &'t Value,
        phase: Phase,
        params: &[String],
        occurrences: &mut HashMap<&'t str, usize>,
    ) -> Vec<Parsed> {
        let hint = "write `group: {steps: [{id: cordon, cordon: {}}, {id: drain, needs: [cordon], drain: {}}]}`";
        let Some(map) = v.as_mapping() else {
            self.at(
                at,
                "group",
                format!("{}; {hint}", wrong(v, "a mapping with `steps`")),
            );
            return Vec::new();
        };
        self.unknown_step_fields(at, "group.", map, GROUP_FIELDS);
        let items = match get(map, "steps") {
            Some(Value::Sequence(items)) if !items.is_empty() => items,
            Some(Value::Sequence(_)) | None => {
                self.at(
                    at,
                    "group.steps",
                    format!("a group needs at least one step; {hint}"),
                );
                return Vec::new();
            }
            Some(other) => {
                self.at(
                    at,
                    "group.steps",
                    format!("{}; {hint}", wrong(other, "a list of steps")),
                );
                return Vec::new();
            }
        };
        let member_of = MemberOf {
            group: at.step.clone(),
            phase,
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(k, raw)| self.step(k, raw, params, occurrences, Some(&member_of)))
            .collect()
    }

    fn needs(&mut self, at: &At, v: Option<&Value>) -> Vec<(String, NeedOn)> {
        let hint = "write a list of step ids, or of {step: ID, on: success|failure|always}";
        let items: &[Value] = match v {
            None => &[],
            Some(Value::Sequence(s)) => s,
            Some(other) => {
                self.at(at, "needs", format!("{}; {hint}", wrong(other, "a list")));
                return Vec::new();
            }
        };
        let outcomes: Vec<&str> = NeedOn::ALL.iter().map(|o| o.as_str()).collect();
        let mut needs = Vec::new();
        for (k, need) in items.iter().enumerate() {
            match need {
                Value::String(s) => needs.push((s.clone(), NeedOn::Success)),
                Value::Mapping(m) => {
                    for (key, message) in unknown_keys(m, NEED_FIELDS) {
                        self.at(at, "needs", format!("entry {}: `{key}`: {message}", k + 1));
                    }
                    let step = match get(m, "step") {
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(other) => {
                            self.at(
                                at,
                                "needs",
                                format!(
                                    "entry {}: `step` {}; {hint}",
                                    k + 1,
                                    wrong(other, "a step id")
                                ),
                            );
                            None
                        }
                        None => {
                            self.at(
                                at,
                                "needs",
                                format!("entry {} has no `step`; {hint}", k + 1),
                            );
                            None
                        }
                    };
                    let on = match get(m, "on") {
                        None => Some(NeedOn::Success),
                        Some(Value::String(s)) => {
                            match NeedOn::ALL.iter().find(|o| o.as_str() == s) {
                                Some(o) => Some(*o),
                                None => {
                                    self.at(
                                        at,
                                        "needs",
                                        format!(
                                            "entry {}: `on: {}` is not an outcome; use one of {}",
                                            k + 1,
                                            short(s),
                                            outcomes.join(", ")
                                        ),
                                    );
                                    None
                                }
                            }
                        }
                        Some(other) => {
                            self.at(
                                at,
                                "needs",
                                format!(
                                    "entry {}: `on` {}; use one of {}",
                                    k + 1,
                                    wrong(other, "an outcome"),
                                    outcomes.join(", ")
                                ),
                            );
                            None
                        }
                    };
                    if let (Some(step), Some(on)) = (step, on) {
                        needs.push((step, on));
                    }
                }
                other => self.at(
                    at,
                    "needs",
                    format!("entry {} is {}; {hint}", k + 1, describe(other)),
                ),
            }
        }
        needs
    }

    fn nodes(&mut self, at: &At, v: &Value) -> Option<NodesSpec> {
        let Some(m) = v.as_mapping() else {
            self.at(
                at,
                "nodes",
                wrong(v, "a mapping of selector, maxParallel and maxFailures"),
            );
            return None;
        };
        self.unknown_step_fields(at, "nodes.", m, NODES_FIELDS);
        let selector =
            match get(m, "selector").map(|s| string(s, "a label selector, like `role=worker`")) {
                Some(Ok(s)) => {
                    if let Some(check) = self.registry.selector_check() {
                        if let Err(e) = check(&s) {
                            self.at(at, "nodes.selector", e);
                        }
                    }
                    Some(s)
                }
                Some(Err(e)) => {
                    self.at(at, "nodes.selector", e);
                    None
                }
                None => None,
            };
        let number = |this: &mut Self, key: &str, min: u64| match get(m, key) {
            None => None,
            Some(v) => match count(v, min, &format!("a whole number of {min} or more")) {
                Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Err(e) => {
                    this.at(at, &format!("nodes.{key}"), e);
                    None
                }
            },
        };
        let max_parallel = number(self, "maxParallel", 1);
        let max_failures = number(self, "maxFailures", 0);
        let max_unavailable = get(m, "maxUnavailable").and_then(|v| {
            let hint = "write a count of 1 or more (`maxUnavailable: 2`) or a percentage of the nodes (`maxUnavailable: 25%`)";
            let parsed = match v {
                Value::Number(_) => count(v, 1, "a whole number of 1 or more")
                    .map(|n| Unavailable::Count(usize::try_from(n).unwrap_or(usize::MAX))),
                Value::String(t) => match t.trim().strip_suffix('%').map(|n| n.trim().parse::<u32>()) {
                    Some(Ok(p)) if (1..=100).contains(&p) => Ok(Unavailable::Percent(p)),
                    _ => Err(format!("`{}` is not a count or a percentage from 1% to 100%", short(t))),
                },
                other => Err(wrong(other, "a count or a percentage")),
            };
            match parsed {
                Ok(u) => Some(u),
                Err(e) => {
                    self.at(at, "nodes.maxUnavailable", format!("{e}; {hint}"));
                    None
                }
            }
        });
        if max_unavailable.is_some() && max_parallel.is_some() {
            self.at(at, "nodes.maxUnavailable", "both `maxParallel` and `maxUnavailable` are set; they say the same (how many nodes at once): keep one");
        }
        let order = get(m, "order").and_then(|v| {
            let hint =
                "write `order: {controlPlaneFirst: true, label: topology.kubernetes.io/zone}`";
            let Some(o) = v.as_mapping() else {
                self.at(
                    at,
                    "nodes.order",
                    format!("{}; {hint}", wrong(v, "a mapping")),
                );
                return None;
            };
            self.unknown_step_fields(at, "nodes.order.", o, ORDER_FIELDS);
            let control_plane_first = match get(o, "controlPlaneFirst").map(boolean) {
                None => false,
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    self.at(at, "nodes.order.controlPlaneFirst", format!("{e}; {hint}"));
                    false
                }
            };
            let label = match get(o, "label").map(|l| string(l, "a label key")) {
                None => None,
                Some(Ok(l)) if !l.trim().is_empty() => Some(l),
                Some(Ok(_)) => {
                    self.at(
                        at,
                        "nodes.order.label",
                        format!("the label key is empty; {hint}"),
                    );
                    None
                }
                Some(Err(e)) => {
                    self.at(at, "nodes.order.label", format!("{e}; {hint}"));
                    None
                }
            };
            Some(NodeOrder {
                control_plane_first,
                label,
            })
        });
        Some(NodesSpec {
            selector,
            max_parallel,
            max_failures,
            max_unavailable,
            order,
        })
    }

    fn body(&mut self, at: &At, key: &str, value: &Value, params: &[String]) -> Option<Body> {
        let id = at.step.as_str();
        match key {
            "gate" => match value {
                Value::Null => Some(Body::Gate),
                Value::Mapping(m) if m.is_empty() => Some(Body::Gate),
                _ => {
                    self.at(at, "gate", "a gate takes no settings; write `gate: {}`");
                    None
                }
            },
            "approval" => {
                let message = value.get("message").and_then(|m| m.as_str());
                let extra = value
                    .as_mapping()
                    .map(|m| m.keys().any(|k| k.as_str() != Some("message")))
                    .unwrap_or(true);
                match message {
                    Some(message) if !extra => Some(Body::Approval {
                        message: message.to_owned(),
                    }),
                    _ => {
                        self.at(
                            at,
                            "approval",
                            "write `approval: {message: \"what the person confirms\"}`",
                        );
                        None
                    }
                }
            }
            kind => {
                let task_kind = self.registry.get(kind)?;
                let ctx = ParseContext {
                    step_id: id,
                    params,
                };
                match task_kind.parse(value, &ctx) {
                    Ok(task) => {
                        for warning in task_kind.warnings(value, &ctx) {
                            self.warnings.push(Problem {
                                line: at.line,
                                step: Some(id.to_owned()),
                                field: Some(kind.to_owned()),
                                ..Problem::new(self.source, warning)
                            });
                        }
                        Some(Body::Task {
                            kind: task_kind.name(),
                            task,
                            spec: value.clone(),
                            local: task_kind.runs_in_kpilot(),
                        })
                    }
                    Err(e) => {
                        self.at(at, kind, e);
                        None
                    }
                }
            }
        }
    }

    fn duration(&mut self, at: &At, field: &str, text: &str) -> Option<Duration> {
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.at(
                    at,
                    field,
                    "the duration is zero; write a positive duration like 30s",
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.at(at, field, e);
                None
            }
        }
    }

    fn retry(&mut self, at: &At, v: &Value) -> Option<RetryPolicy> {
        let hint = "write `retry: {limit: 3, backoff: {initial: 1s, factor: 2, max: 1m}}`";
        let Some(m) = v.as_mapping() else {
            self.at(at, "retry", format!("{}; {hint}", wrong(v, "a mapping")));
            return None;
        };
        self.unknown_step_fields(at, "retry.", m, RETRY_FIELDS);
        let limit = match get(m, "limit") {
            None => {
                self.at(at, "retry.limit", format!("`retry` has no `limit`; {hint}"));
                None
            }
            Some(v) => {
                match count(v, 0, "a whole number of retries, 0 or more") {
                    Ok(n) => {
                        match u32::try_from(n) {
                            Ok(n) => Some(n),
                            Err(_) => {
                                self.at(at, "retry.limit", format!("{n} retries is more than kpilot counts; write a smaller limit"));
                                None
                            }
                        }
                    }
                    Err(e) => {
                        self.at(at, "retry.limit", e);
                        None
                    }
                }
            }
        };
        let empty = Mapping::new();
        let backoff = match get(m, "backoff") {
            None => &empty,
            Some(Value::Mapping(b)) => b,
            Some(other) => {
                self.at(
                    at,
                    "retry.backoff",
                    format!("{}; {hint}", wrong(other, "a mapping")),
                );
                return None;
            }
        };
        self.unknown_step_fields(at, "retry.backoff.", backoff, BACKOFF_FIELDS);
        let wait = |this: &mut Self, key: &str| match get(backoff, key) {
            None => Ok(None),
            Some(v) => {
                let field = format!("retry.backoff.{key}");
                match string(v, "a duration like 1s") {
                    Ok(t) => this.duration(at, &field, &t).map(Some).ok_or(()),
                    Err(e) => {
                        this.at(at, &field, e);
                        Err(())
                    }
                }
            }
        };
        let initial = wait(self, "initial")
            .ok()?
            .unwrap_or(Duration::from_secs(1));
        let max = wait(self, "max")
            .ok()?
            .unwrap_or(Duration::from_secs(60).max(initial));
        let factor = match get(backoff, "factor") {
            None => 2.0,
            Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Some(other) => {
                self.at(
                    at,
                    "retry.backoff.factor",
                    wrong(other, "a number of 1 or more, like 2"),
                );
                return None;
            }
        };
        if !(factor.is_finite() && (1.0..=1000.0).contains(&factor)) {
            self.at(
                at,
                "retry.backoff.factor",
                format!("factor {factor} is not a number from 1 to 1000"),
            );
            return None;
        }
        if max < initial {
            self.at(
                at,
                "retry.backoff.max",
                "max is shorter than initial; make max at least initial",
            );
            return None;
        }
        Some(RetryPolicy {
            limit: limit?,
            initial,
            factor,
            max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, Invalid> {
        let source = WorkflowSource {
            path: "wf.yaml".into(),
            text: text.into(),
        };
        validate(&source, &TaskRegistry::new())
    }

    #[test]
    fn placement_is_decided_once_from_the_executor() {
        let plan = plan(
            "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: x}\nspec:\n  executors:\n    - {name: once, nodes: [n1]}\n    - {name: all, perNode: true}\n  steps:\n    - {id: g, phase: upgrade, gate: {}}\n    - {id: p, phase: upgrade, executor: per-node, gate: {}}\n    - {id: o, phase: upgrade, executor: once, gate: {}}\n    - {id: a, phase: upgrade, executor: all, gate: {}}\n",
        )
        .expect("valid");
        let placements: Vec<Placement> = plan.steps.iter().map(|s| s.placement).collect();
        assert_eq!(
            placements,
            [
                Placement::Global,
                Placement::EveryNode,
                Placement::PoolMember,
                Placement::EveryNode
            ]
        );
    }

    #[test]
    fn a_duplicate_id_never_panics_and_names_both_lines() {
        let err = plan(
            "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {name: x}\nspec:\n  steps:\n    - {id: a, phase: upgrade, gate: {}}\n    - {id: b, phase: upgrade, needs: [a], gate: {}}\n    - {id: a, phase: upgrade, gate: {}}\n",
        )
        .expect_err("duplicate");
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(
            err.to_string(),
            "wf.yaml:8: step `a`, field `id`: step id `a` is used twice: lines 6 and 8; rename one (step ids must be unique)"
        );
    }
}
