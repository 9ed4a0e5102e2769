//! Validation: from a workflow file's text to a [`Plan`], or to every problem
//! found, each naming the file, the line, the step and field, and what to change.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::dag::Dag;
use crate::id::StepId;
use crate::plan::{Body, FanOut, Need, Plan, PlannedParam, PlannedStep, RetryPolicy};
use crate::task::{ParseContext, TaskRegistry};
use crate::workflow::{
    NeedOn, NeedSpec, Phase, StepSpec, Workflow, WorkflowSource, API_VERSION, KIND, STEP_FIELDS,
};

/// The executors every workflow may name; `spec.executors` adds more.
pub const EXECUTORS: &[&str] = &["global", "per-node"];

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

    fn in_step(
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

/// Parses a duration such as `500ms`, `90s` or `5m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "`{text}` is not a duration ({e}); write a number and a unit, like 500ms, 90s or 5m"
        )
    })
}

/// Validates a workflow and builds its plan.
pub fn validate(source: &WorkflowSource, registry: &TaskRegistry) -> Result<Plan, Invalid> {
    let workflow: Workflow = match serde_yaml::from_str(&source.text) {
        Ok(w) => w,
        Err(e) => {
            let location = e.location();
            return Err(Invalid {
                problems: vec![Problem {
                    line: location.as_ref().map(|l| l.line()),
                    column: location.as_ref().map(|l| l.column()),
                    ..Problem::new(source, yaml_message(&e))
                }],
            });
        }
    };
    let mut v = Validator {
        source,
        registry,
        problems: Vec::new(),
    };
    let plan = v.workflow(workflow);
    match plan {
        Some(plan) if v.problems.is_empty() => Ok(plan),
        _ => {
            v.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            Err(Invalid {
                problems: v.problems,
            })
        }
    }
}

fn yaml_message(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    // serde_yaml appends "at line L column C"; the location is reported separately.
    let text = match text.find(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    if text.contains("unknown field") {
        format!("{text}; remove it or fix its spelling")
    } else {
        text
    }
}

/// A step's `when`, which sees the run's params and the upstream steps.
fn compile_when(text: &str) -> Result<kpilot_expr::Expr, kpilot_expr::ExprError> {
    kpilot_expr::Expr::compile(text, &["params", "steps"])
}

struct Validator<'a> {
    source: &'a WorkflowSource,
    registry: &'a TaskRegistry,
    problems: Vec<Problem>,
}

/// A step after its own fields were read, before edges are resolved.
struct Parsed {
    spec: StepSpec,
    body: Option<Body>,
    needs: Vec<(String, NeedOn)>,
}

impl Validator<'_> {
    fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(Problem::new(self.source, message));
    }

    fn step_problem(&mut self, step: &str, field: &str, message: impl Into<String>) {
        self.problems
            .push(Problem::in_step(self.source, step, field, message));
    }

    fn workflow(&mut self, wf: Workflow) -> Option<Plan> {
        if wf.api_version != API_VERSION {
            self.problem(format!(
                "apiVersion is `{}`; write `apiVersion: {API_VERSION}`",
                wf.api_version
            ));
        }
        if wf.kind != KIND {
            self.problem(format!("kind is `{}`; write `kind: {KIND}`", wf.kind));
        }
        if wf.metadata.name.trim().is_empty() {
            self.problem("metadata.name is empty; give the workflow a name");
        }
        let concurrency = match wf.spec.concurrency {
            Some(0) => {
                self.problem("spec.concurrency is 0; write 1 or more");
                1
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        };
        let params = self.params(&wf.spec.params);
        let executors = wf.spec.executors.clone();
        for (i, e) in executors.iter().enumerate() {
            if EXECUTORS.contains(&e.name.as_str())
                || executors[..i].iter().any(|o| o.name == e.name)
            {
                self.problem(format!(
                    "spec.executors: the name `{}` is taken; give each pool a name of its own, other than {}",
                    e.name,
                    EXECUTORS.join(" and ")
                ));
            }
            if e.concurrency == Some(0) {
                self.problem(format!(
                    "spec.executors `{}`: concurrency is 0; write 1 or more",
                    e.name
                ));
            }
        }
        let param_names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
        if wf.spec.steps.is_empty() {
            self.problem("spec.steps is empty; a workflow needs at least one step");
        }

        let mut parsed = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, raw) in wf.spec.steps.iter().enumerate() {
            let Some(step) = self.step(i, raw, &param_names) else {
                continue;
            };
            if index.insert(step.spec.id.clone(), parsed.len()).is_some() {
                self.step_problem(
                    &step.spec.id,
                    "id",
                    "this id is used by another step too; step ids must be unique",
                );
                continue;
            }
            parsed.push(step);
        }

        let ids: Vec<String> = parsed.iter().map(|p| p.spec.id.clone()).collect();
        let mut edges = Vec::new();
        let mut steps = Vec::new();
        for (i, p) in parsed.iter().enumerate() {
            let id = p.spec.id.as_str();
            let mut needs = Vec::new();
            for (need, on) in &p.needs {
                match index.get(need.as_str()) {
                    None => self.step_problem(
                        id,
                        "needs",
                        format!("needs `{need}`, which is not a step of this workflow; known steps: {}", ids.join(", ")),
                    ),
                    Some(&j) if j == i => {
                        self.step_problem(id, "needs", "a step cannot need itself")
                    }
                    Some(&j) if parsed[j].spec.phase == Phase::Repair => self.step_problem(
                        id,
                        "needs",
                        format!("needs `{need}`, a repair step; repair steps run only as the `repair` of a failed step, so nothing can wait for them"),
                    ),
                    Some(&j) => {
                        edges.push((j, i, *on));
                        needs.push(Need { step: j, on: *on });
                    }
                }
            }
            let repair = match &p.spec.repair {
                None => None,
                Some(r) => match index.get(r.as_str()) {
                    None => {
                        self.step_problem(
                            id,
                            "repair",
                            format!("`{r}` is not a step of this workflow"),
                        );
                        None
                    }
                    Some(&j) if parsed[j].spec.phase != Phase::Repair => {
                        self.step_problem(
                            id,
                            "repair",
                            format!("`{r}` is in phase {}; a step named by `repair` must have `phase: repair`", parsed[j].spec.phase.as_str()),
                        );
                        None
                    }
                    Some(&j) => Some(j),
                },
            };
            if p.spec.phase == Phase::Repair {
                if !p.needs.is_empty() {
                    self.step_problem(id, "needs", "a repair step runs only when the step it repairs fails; remove its `needs`");
                }
                if p.spec.repair.is_some() {
                    self.step_problem(
                        id,
                        "repair",
                        "a repair step cannot have a repair of its own",
                    );
                }
            }
            let when = p.spec.when.as_deref().and_then(|w| match compile_when(w) {
                Ok(e) => Some(e),
                Err(e) => {
                    self.step_problem(id, "when", e.to_string());
                    None
                }
            });
            let executor = p
                .spec
                .executor
                .clone()
                .unwrap_or_else(|| "global".to_owned());
            let pool = executors.iter().find(|e| e.name == executor);
            if pool.is_none() && !EXECUTORS.contains(&executor.as_str()) {
                let mut known: Vec<&str> = EXECUTORS.to_vec();
                known.extend(executors.iter().map(|e| e.name.as_str()));
                self.step_problem(
                    id,
                    "executor",
                    format!(
                        "unknown executor `{executor}`; known executors: {}; declare pools in spec.executors",
                        known.join(", ")
                    ),
                );
            }
            let fans_out = executor == "per-node" || pool.is_some_and(|p| p.per_node);
            if fans_out && p.spec.repair.is_some() {
                self.step_problem(
                    id,
                    "repair",
                    "a step run on every node cannot have a repair yet; run the fix as a step (not in phase repair) that needs this one `on: failure`, or use retry",
                );
            }
            let nodes = p.spec.nodes.clone().unwrap_or_default();
            if p.spec.nodes.is_some() && !fans_out {
                self.step_problem(
                    id,
                    "nodes",
                    format!("`nodes` applies to steps that fan out over nodes; executor `{executor}` runs the step once (use `executor: per-node`, or a pool with `perNode: true`)"),
                );
            }
            if nodes.max_parallel == Some(0) {
                self.step_problem(id, "nodes.maxParallel", "maxParallel is 0; write 1 or more");
            }
            let fan_out = FanOut {
                selector: nodes.selector.clone(),
                max_parallel: nodes.max_parallel.or(pool.and_then(|p| p.concurrency)),
                max_failures: nodes
                    .max_failures
                    .or(pool.and_then(|p| p.max_failures))
                    .unwrap_or(0),
            };
            let timeout = p
                .spec
                .timeout
                .as_deref()
                .and_then(|t| self.duration(id, "timeout", t));
            let retry = p.spec.retry.as_ref().and_then(|r| self.retry(id, r));
            let Some(body) = p.body.clone() else { continue };
            let idempotent = p.spec.idempotent.unwrap_or(match &body {
                Body::Gate | Body::Approval { .. } => true,
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
                phase: p.spec.phase,
                needs,
                when,
                executor,
                fan_out,
                body,
                retry,
                timeout,
                repair,
                idempotent,
            });
        }
        for p in &parsed {
            if p.spec.phase == Phase::Repair
                && !parsed
                    .iter()
                    .any(|q| q.spec.repair.as_deref() == Some(p.spec.id.as_str()))
            {
                self.step_problem(
                    &p.spec.id,
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
        Some(Plan {
            name: wf.metadata.name,
            description: wf.metadata.description,
            steps,
            dag: dag?,
            concurrency,
            params,
            executors,
            inventory: wf.spec.inventory,
        })
    }

    fn params(&mut self, specs: &[crate::workflow::ParamSpec]) -> Vec<PlannedParam> {
        let mut out: Vec<PlannedParam> = Vec::new();
        for p in specs {
            let name_ok = !p.name.is_empty()
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && p.name.starts_with(|c: char| c.is_ascii_alphabetic());
            if !name_ok {
                self.problem(format!(
                    "param name `{}` is not valid; use letters, digits, `-` and `_`, starting with a letter",
                    p.name
                ));
            }
            if out.iter().any(|q| q.name == p.name) {
                self.problem(format!("param `{}` is declared twice", p.name));
            }
            let default = match &p.default {
                None | Some(serde_yaml::Value::Null) => None,
                Some(serde_yaml::Value::String(s)) => Some(s.clone()),
                Some(serde_yaml::Value::Bool(b)) => Some(b.to_string()),
                Some(serde_yaml::Value::Number(n)) if !n.is_f64() => Some(n.to_string()),
                Some(serde_yaml::Value::Number(n)) => {
                    self.problem(format!(
                        "param `{}` has a default that YAML reads as the number {n} (1.10 would become 1.1); quote it as a string, like default: \"1.16\"",
                        p.name
                    ));
                    None
                }
                Some(_) => {
                    self.problem(format!(
                        "param `{}` has a default that is not a plain value; write a string",
                        p.name
                    ));
                    None
                }
            };
            out.push(PlannedParam {
                name: p.name.clone(),
                default,
                description: p.description.clone(),
            });
        }
        out
    }

    fn step(&mut self, i: usize, raw: &serde_yaml::Value, params: &[String]) -> Option<Parsed> {
        let label = raw
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("#{}", i + 1));
        if !raw.is_mapping() {
            self.problem(format!(
                "spec.steps[{i}] is not a mapping; a step is `- id: ...` with its fields"
            ));
            return None;
        }
        let spec: StepSpec = match serde_yaml::from_value(raw.clone()) {
            Ok(s) => s,
            Err(e) => {
                let field = [
                    "phase",
                    "id",
                    "needs",
                    "retry",
                    "idempotent",
                    "timeout",
                    "when",
                    "executor",
                    "repair",
                ]
                .into_iter()
                .find(|f| {
                    e.to_string().contains(&format!("`{f}`"))
                        || (e.to_string().contains("variant") && *f == "phase")
                })
                .unwrap_or("");
                let mut msg = yaml_message(&e);
                if msg.contains("unknown variant") {
                    msg =
                        format!("{msg}; use one of pre-check, upgrade, post-check, repair, patrol");
                }
                self.step_problem(&label, field, msg);
                return None;
            }
        };
        let id = spec.id.clone();
        if let Err(e) = StepId::parse(&id) {
            self.step_problem(&id, "id", e);
        }

        let mut bodies = Vec::new();
        for (key, value) in &spec.body {
            let known_body = key == "gate" || key == "approval" || self.registry.get(key).is_some();
            if known_body {
                bodies.push((key.clone(), value.clone()));
            } else {
                let mut kinds = vec!["gate", "approval"];
                kinds.extend(self.registry.names());
                let hint = nearest(
                    key,
                    STEP_FIELDS.iter().copied().chain(kinds.iter().copied()),
                )
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
                self.step_problem(
                    &id,
                    key,
                    format!(
                        "unknown field{hint}; a step has {} and exactly one body: {}",
                        STEP_FIELDS.join(", "),
                        kinds.join(", ")
                    ),
                );
            }
        }
        let unknown_fields = spec.body.len() > bodies.len();
        let body = match bodies.len() {
            0 if unknown_fields => None,
            0 => {
                let mut kinds = vec!["gate", "approval"];
                kinds.extend(self.registry.names());
                self.step_problem(
                    &id,
                    "",
                    format!(
                        "the step has no body; give it exactly one of: {}",
                        kinds.join(", ")
                    ),
                );
                None
            }
            1 => {
                let (key, value) = bodies.remove(0);
                self.body(&id, &key, &value, params)
            }
            _ => {
                let keys: Vec<String> = bodies.iter().map(|(k, _)| format!("`{k}`")).collect();
                self.step_problem(&id, "", format!("the step has {} bodies ({}); keep exactly one, and split the rest into steps of their own", keys.len(), keys.join(", ")));
                None
            }
        };

        let mut needs = Vec::new();
        for need in &spec.needs {
            match need {
                serde_yaml::Value::String(s) => needs.push((s.clone(), NeedOn::Success)),
                serde_yaml::Value::Mapping(_) => {
                    match serde_yaml::from_value::<NeedSpec>(need.clone()) {
                        Ok(n) => needs.push((n.step, n.on.unwrap_or(NeedOn::Success))),
                        Err(e) => self.step_problem(
                            &id,
                            "needs",
                            format!(
                                "{}; write an id, or {{step: ID, on: success|failure|always}}",
                                yaml_message(&e)
                            ),
                        ),
                    }
                }
                _ => self.step_problem(
                    &id,
                    "needs",
                    "each entry is a step id or {step: ID, on: success|failure|always}",
                ),
            }
        }
        Some(Parsed { spec, body, needs })
    }

    fn body(
        &mut self,
        id: &str,
        key: &str,
        value: &serde_yaml::Value,
        params: &[String],
    ) -> Option<Body> {
        match key {
            "gate" => match value {
                serde_yaml::Value::Null => Some(Body::Gate),
                serde_yaml::Value::Mapping(m) if m.is_empty() => Some(Body::Gate),
                _ => {
                    self.step_problem(id, "gate", "a gate takes no settings; write `gate: {}`");
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
                        self.step_problem(
                            id,
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
                    Ok(task) => Some(Body::Task {
                        kind: task_kind.name(),
                        task,
                        spec: value.clone(),
                    }),
                    Err(e) => {
                        self.step_problem(id, kind, e);
                        None
                    }
                }
            }
        }
    }

    fn duration(&mut self, id: &str, field: &str, text: &str) -> Option<Duration> {
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.step_problem(
                    id,
                    field,
                    "the duration is zero; write a positive duration like 30s",
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.step_problem(id, field, e);
                None
            }
        }
    }

    fn retry(&mut self, id: &str, spec: &crate::workflow::RetrySpec) -> Option<RetryPolicy> {
        let backoff = spec
            .backoff
            .clone()
            .unwrap_or(crate::workflow::BackoffSpec {
                initial: None,
                factor: None,
                max: None,
            });
        let initial = match &backoff.initial {
            Some(t) => self.duration(id, "retry.backoff.initial", t)?,
            None => Duration::from_secs(1),
        };
        let max = match &backoff.max {
            Some(t) => self.duration(id, "retry.backoff.max", t)?,
            None => Duration::from_secs(60).max(initial),
        };
        let factor = backoff.factor.unwrap_or(2.0);
        if !(factor.is_finite() && factor >= 1.0) {
            self.step_problem(
                id,
                "retry.backoff.factor",
                format!("factor {factor} is not a number of 1 or more"),
            );
            return None;
        }
        if max < initial {
            self.step_problem(
                id,
                "retry.backoff.max",
                "max is shorter than initial; make max at least initial",
            );
            return None;
        }
        Some(RetryPolicy {
            limit: spec.limit,
            initial,
            factor,
            max,
        })
    }
}

/// The candidate closest to `word` by edit distance, if close enough to be a typo.
fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(word, c);
        if d <= 2 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
