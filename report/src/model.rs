//! The report model, built from a run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kpilot_engine::state::{RunRecord, SkipCause, StepRecord, StepState};
use kpilot_engine::{InstanceId, StepId};
use serde::Serialize;
use serde_json::Value;
use serde_yaml::Value as Yaml;

/// The version of the JSON this model serialises to; it changes only when a
/// field changes meaning or goes away (new fields may appear).
pub const SCHEMA_VERSION: u32 = 1;

use kpilot_catalog::build::keys;

/// Why a run gives no report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The workflow kept with the run cannot be read.
    #[error("run {run}: the workflow kept with it is not YAML: {message}")]
    Workflow {
        /// The run.
        run: String,
        /// The parser's message.
        message: String,
    },
}

/// How a check, or one item of it, came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It held.
    Passed,
    /// It did not hold, and its severity is `warning` (or `info`).
    Warning,
    /// It did not hold, and its severity is `error`.
    Failed,
    /// It could not be checked: its data could not be read, or it did not run.
    Error,
}

impl Outcome {
    /// The name in JSON and text.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Warning => "warning",
            Outcome::Failed => "failed",
            Outcome::Error => "error",
        }
    }

    /// How bad it is, for sorting: error and failed first.
    fn rank(self) -> u8 {
        match self {
            Outcome::Error => 3,
            Outcome::Failed => 4,
            Outcome::Warning => 2,
            Outcome::Passed => 1,
        }
    }
}

/// The cluster the report is about.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    /// The API server's address; empty without a cluster.
    pub server: String,
    /// Its version as it reports it; empty without a cluster.
    pub version: String,
    /// managed, self-hosted, serverless, edge or gpu.
    #[serde(rename = "type")]
    pub cluster_type: String,
}

/// Checks counted by outcome.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Held.
    pub passed: usize,
    /// Did not hold, warning.
    pub warning: usize,
    /// Did not hold, error.
    pub failed: usize,
    /// Could not be checked.
    pub error: usize,
}

impl Counts {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Passed => self.passed += 1,
            Outcome::Warning => self.warning += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Error => self.error += 1,
        }
    }

    /// failed + error: what an operator calls abnormal.
    pub fn abnormal(&self) -> usize {
        self.failed + self.error
    }
}

/// One category of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Category {
    /// `cluster-resources/nodes`.
    pub id: String,
    /// `Nodes`.
    pub title: String,
    /// Its checks' ids, worst first.
    pub checks: Vec<String>,
    /// Its checks by outcome.
    #[serde(flatten)]
    pub counts: Counts,
}

/// What to do about a failed check.
#[derive(Debug, Clone, Serialize)]
pub struct Remediation {
    /// What a person should do.
    pub text: String,
    /// Where to read more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The Kubernetes object an item is about.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Like `apps/v1`; empty when unknown.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// Like `Deployment`.
    pub kind: String,
    /// Its namespace, for namespaced objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

/// One thing a check found: a node, an object, a manifest.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// How it came out.
    pub outcome: Outcome,
    /// What is wrong with it.
    pub message: String,
    /// The node whose agent answered, for checks run on every node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The object it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// Where the object was read: a file path, `cluster`, `helm:NAMESPACE/RELEASE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The apiVersion to use instead (removed APIs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// The release that removes its apiVersion (removed APIs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_in: Option<String>,
}

/// One check of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// The check's id (and its step's).
    pub id: String,
    /// What holds when it passes.
    pub title: String,
    /// Its category.
    pub category: String,
    /// error, warning or info.
    pub severity: String,
    /// How it came out.
    pub outcome: Outcome,
    /// What it found, in a sentence.
    pub message: String,
    /// What to do.
    pub remediation: Remediation,
    /// What did not pass, each on its own.
    pub items: Vec<Item>,
}

/// A report: what one run found, an inspection's checks or a workflow's steps.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run it was built from.
    pub run_id: String,
    /// The cluster.
    pub cluster: Cluster,
    /// The run's workflow: `inspect-SCENARIO` for an inspection.
    pub workflow: String,
    /// upgrade-pre, upgrade-post or patrol; empty (and left out of the JSON)
    /// for a run of a workflow that `kpilot inspect` did not build.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scenario: String,
    /// The upgrade target, for upgrade scenarios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// When the run started.
    pub time: DateTime<Utc>,
    /// The run's state: succeeded, failed, running, blocked.
    pub run_state: String,
    /// Checks by outcome.
    pub summary: Counts,
    /// Categories, abnormal first.
    pub categories: Vec<Category>,
    /// Checks, worst first within the order of categories.
    pub checks: Vec<CheckResult>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn annotations(v: Option<&Yaml>) -> BTreeMap<String, String> {
    v.and_then(|v| v.get("annotations"))
        .and_then(Yaml::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// How one instance of a check step came out, and its message.
fn instance_outcome(record: &StepRecord) -> (Outcome, String) {
    let output = record.output.as_ref();
    let said = output.and_then(|o| text(o, "message"));
    let reason = || {
        said.clone()
            .or_else(|| record.reason.clone())
            .unwrap_or_default()
    };
    match record.state {
        StepState::Succeeded => {
            let outcome = match output.and_then(|o| text(o, "outcome")).as_deref() {
                Some("warning") => Outcome::Warning,
                _ => Outcome::Passed,
            };
            (outcome, reason())
        }
        StepState::Failed => {
            let unread = output.is_none_or(|o| {
                o.get("error").is_some()
                    || o.get("errors")
                        .and_then(Value::as_array)
                        .is_some_and(|e| !e.is_empty())
            });
            if unread {
                (Outcome::Error, format!("could not check: {}", reason()))
            } else {
                (Outcome::Failed, reason())
            }
        }
        state => (
            Outcome::Error,
            format!(
                "could not check: the step is {}{}",
                state.as_str(),
                record
                    .reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        ),
    }
}

fn object(v: &Value) -> Option<ObjectRef> {
    let o = v.get("object")?;
    Some(ObjectRef {
        api_version: text(o, "apiVersion").unwrap_or_default(),
        kind: text(o, "kind")?,
        namespace: text(o, "namespace"),
        name: text(o, "name")?,
    })
}

/// The items an instance's output lists: failed items, then those that
/// could not be evaluated.
fn items(record: &StepRecord, item_outcome: Outcome, node: Option<&str>) -> Vec<Item> {
    let Some(output) = record.output.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // A check of one value (no `forEach`) names its one miss after its
    // query: that is the check's own message, not an item.
    let whole = text(output, "query");
    let lists = [
        ("items", "message", item_outcome),
        ("errors", "error", Outcome::Error),
    ];
    for (list, field, outcome) in lists {
        for entry in output
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if whole.is_some() && text(entry, "name") == whole && entry.get("object").is_none() {
                continue;
            }
            out.push(Item {
                outcome,
                message: text(entry, field).unwrap_or_default(),
                node: node.map(str::to_owned),
                object: object(entry),
                source: text(entry, "source"),
                replacement: text(entry, "replacement"),
                removed_in: text(entry, "removedIn"),
            });
        }
    }
    out
}

type Records = (StepId, InstanceId, StepRecord);

/// A check's outcome, message and items from its step's records: one
/// instance, or the worst of its nodes (each node that did not pass an item,
/// or its items, each naming the node).
fn judge(
    records: &[&Records],
    item_outcome: Outcome,
    outcome_of: &dyn Fn(&InstanceId, &StepRecord) -> (Outcome, String),
) -> (Outcome, String, Vec<Item>) {
    let nodes: Vec<&Records> = records
        .iter()
        .copied()
        .filter(|(_, i, _)| *i != InstanceId::global())
        .collect();
    if nodes.is_empty() {
        return match records.first() {
            Some((_, instance, record)) => {
                let (outcome, message) = outcome_of(instance, record);
                let found = if outcome == Outcome::Passed {
                    Vec::new()
                } else {
                    items(record, item_outcome, None)
                };
                (outcome, message, found)
            }
            None => (
                Outcome::Error,
                "could not check: the step never ran".to_owned(),
                Vec::new(),
            ),
        };
    }
    let mut worst = Outcome::Passed;
    let mut found = Vec::new();
    let mut bad = 0;
    for (_, instance, record) in &nodes {
        let node = instance.as_str();
        let (outcome, message) = outcome_of(instance, record);
        if outcome.rank() > worst.rank() {
            worst = outcome;
        }
        if outcome == Outcome::Passed {
            continue;
        }
        bad += 1;
        let listed = items(record, item_outcome, Some(node));
        if listed.is_empty() {
            found.push(Item {
                outcome,
                message,
                node: Some(node.to_owned()),
                object: Some(ObjectRef {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    namespace: None,
                    name: node.to_owned(),
                }),
                source: None,
                replacement: None,
                removed_in: None,
            });
        } else {
            found.extend(listed);
        }
    }
    let message = if bad == 0 {
        format!("all {} nodes passed", nodes.len())
    } else {
        let names: Vec<&str> = found
            .iter()
            .filter_map(|i| i.node.as_deref())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        format!(
            "{bad} of {} nodes did not pass: {}",
            nodes.len(),
            names.join(", ")
        )
    };
    (worst, message, found)
}

/// The check of an inspection's step: the catalog check the report builder
/// wrote as it, with its title, category, severity and remediation.
fn inspection_check(
    step: &Yaml,
    steps: &[Records],
    titles: &mut BTreeMap<String, String>,
) -> Option<CheckResult> {
    let notes = annotations(Some(step));
    let id = step.get("id").and_then(Yaml::as_str)?;
    let title = notes.get(keys::TITLE)?;
    let note = |k: &str| notes.get(k).cloned().unwrap_or_default();
    let category = note(keys::CATEGORY);
    titles.insert(category.clone(), note(keys::CATEGORY_TITLE));
    let severity = note(keys::SEVERITY);
    let item_outcome = if severity == "error" {
        Outcome::Failed
    } else {
        Outcome::Warning
    };
    let records: Vec<&Records> = steps.iter().filter(|(s, _, _)| s.as_str() == id).collect();
    let (outcome, message, found) = judge(&records, item_outcome, &|_, r| instance_outcome(r));
    Some(CheckResult {
        id: id.to_owned(),
        title: title.clone(),
        category,
        severity,
        outcome,
        message,
        remediation: Remediation {
            text: note(keys::REMEDIATION),
            url: notes.get(keys::REMEDIATION_URL).cloned(),
        },
        items: found,
    })
}

/// The bodies a step may have, for a step's title.
const BODIES: &[&str] = &[
    "command", "script", "image", "gate", "approval", "check", "trace", "group", "cordon",
    "uncordon", "drain", "wait", "snapshot",
];

/// The category prefix of a workflow's phases: `phases/pre-check`.
pub const PHASES: &str = "phases";

/// Every step a workflow declares, with its id as the run keeps it (a group
/// member's is `GROUP.MEMBER`) and its phase. A group stands for its members:
/// they are what ran.
fn declared(spec_steps: &[Yaml]) -> Vec<(Declared, String)> {
    let mut out = Vec::new();
    for step in spec_steps {
        let Some(id) = step.get("id").and_then(Yaml::as_str) else {
            continue;
        };
        let phase = step
            .get("phase")
            .and_then(Yaml::as_str)
            .unwrap_or("pre-check")
            .to_owned();
        let members = step
            .get("group")
            .and_then(|g| g.get("steps"))
            .and_then(Yaml::as_sequence);
        match members {
            Some(members) if !members.is_empty() => {
                for m in members {
                    let Some(mid) = m.get("id").and_then(Yaml::as_str) else {
                        continue;
                    };
                    let phase = m
                        .get("phase")
                        .and_then(Yaml::as_str)
                        .map_or_else(|| phase.clone(), str::to_owned);
                    out.push((
                        Declared {
                            id: format!("{id}.{mid}"),
                            yaml: m.clone(),
                        },
                        phase,
                    ));
                }
            }
            _ => out.push((
                Declared {
                    id: id.to_owned(),
                    yaml: step.clone(),
                },
                phase,
            )),
        }
    }
    out
}

/// A step of a workflow, as the run keeps its id.
struct Declared {
    id: String,
    yaml: Yaml,
}

/// `pre-check` → `Pre-check`.
fn phase_title(phase: &str) -> String {
    let mut chars = phase.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// How one instance of a workflow's step came out, as a check. A step skipped
/// because its `when` was false, or because the step it needs succeeded when
/// it runs only otherwise (`on: failure`), did what the workflow says:
/// passed. A step skipped because what it needed failed did not run: it is
/// not known to hold (`error`), and the failure itself is its need's.
fn step_outcome(
    instance: &InstanceId,
    record: &StepRecord,
    is_check: bool,
    steps: &[Records],
) -> (Outcome, String) {
    let said = || {
        record
            .output
            .as_ref()
            .and_then(|o| text(o, "message"))
            .or_else(|| record.reason.clone())
    };
    match (record.state, &record.skip) {
        (StepState::Succeeded | StepState::Failed, _) if is_check => instance_outcome(record),
        (StepState::Succeeded, _) => (
            Outcome::Passed,
            said().unwrap_or_else(|| "succeeded".into()),
        ),
        (StepState::Failed, _) => (Outcome::Failed, said().unwrap_or_else(|| "failed".into())),
        (StepState::Skipped, Some(SkipCause::Condition)) => {
            (Outcome::Passed, "skipped: its `when` was false".to_owned())
        }
        (StepState::Skipped, Some(SkipCause::Need { step })) => {
            // The need on the same node, else the need run once.
            let need = steps
                .iter()
                .filter(|(s, _, _)| s == step)
                .max_by_key(|(_, i, _)| (i == instance, *i == InstanceId::global()))
                .map(|(_, _, r)| r.state);
            match need {
                Some(StepState::Succeeded) => (
                    Outcome::Passed,
                    format!(
                        "skipped: `{step}` succeeded, and this step runs only when it does not"
                    ),
                ),
                state => (
                    Outcome::Error,
                    format!(
                        "could not check: skipped because `{step}` {}",
                        state.map_or("never ran", StepState::as_str)
                    ),
                ),
            }
        }
        _ => instance_outcome(record),
    }
}

/// The check of a workflow's step: its outcome from its state, its message
/// from its reason, its phase as its category.
fn step_check(
    run: &str,
    step: Declared,
    phase: &str,
    steps: &[Records],
    titles: &mut BTreeMap<String, String>,
) -> Option<CheckResult> {
    let notes = annotations(Some(&step.yaml));
    let records: Vec<&Records> = steps
        .iter()
        .filter(|(s, _, _)| s.as_str() == step.id)
        .collect();
    // A repair runs only when the step it repairs fails: one that never
    // started was not needed.
    if phase == "repair"
        && records
            .iter()
            .all(|(_, _, r)| r.state == StepState::Pending)
    {
        return None;
    }
    let kind = BODIES
        .iter()
        .find(|b| step.yaml.get(**b).is_some())
        .copied()
        .unwrap_or("step");
    let category = format!("{PHASES}/{phase}");
    titles.insert(category.clone(), phase_title(phase));
    let severity = notes
        .get(keys::SEVERITY)
        .cloned()
        .unwrap_or_else(|| "error".into());
    let item_outcome = if severity == "error" {
        Outcome::Failed
    } else {
        Outcome::Warning
    };
    let is_check = kind == "check";
    let (outcome, message, found) = judge(&records, item_outcome, &|i, r| {
        step_outcome(i, r, is_check, steps)
    });
    Some(CheckResult {
        title: notes
            .get(keys::TITLE)
            .cloned()
            .unwrap_or_else(|| format!("step {} ({kind})", step.id)),
        category,
        severity,
        outcome,
        message,
        remediation: Remediation {
            // A step that ran printed something to read; one that did not
            // has its reason in the run's status.
            text: notes.get(keys::REMEDIATION).cloned().unwrap_or_else(|| {
                if records.iter().any(|(_, _, r)| r.attempts > 0) {
                    format!(
                        "`kpilot logs {run} {}` shows what the step printed",
                        step.id
                    )
                } else {
                    format!("`kpilot status {run}` shows why the step did not run")
                }
            }),
            url: notes.get(keys::REMEDIATION_URL).cloned(),
        },
        items: found,
        id: step.id,
    })
}

impl Report {
    /// Builds the report of a run from what the store keeps of it: of a run
    /// of `kpilot inspect`, its catalog checks; of any other run, each step
    /// as a check of its own, in a category per phase (`phases/upgrade`).
    pub fn from_run(
        run: &RunRecord,
        steps: &[(StepId, InstanceId, StepRecord)],
    ) -> Result<Report, ReportError> {
        let workflow: Yaml =
            serde_yaml::from_str(&run.source).map_err(|e| ReportError::Workflow {
                run: run.id.to_string(),
                message: e.to_string(),
            })?;
        let meta = annotations(workflow.get("metadata"));
        let inspection = meta.contains_key(keys::REPORT);
        let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
        let mut titles: BTreeMap<String, String> = BTreeMap::new();
        let spec_steps = workflow
            .get("spec")
            .and_then(|s| s.get("steps"))
            .and_then(Yaml::as_sequence)
            .cloned()
            .unwrap_or_default();
        let mut checks = Vec::new();
        if inspection {
            for step in &spec_steps {
                if let Some(c) = inspection_check(step, steps, &mut titles) {
                    checks.push(c);
                }
            }
        } else {
            for (step, phase) in declared(&spec_steps) {
                if let Some(c) = step_check(&run.id.to_string(), step, &phase, steps, &mut titles) {
                    checks.push(c);
                }
            }
        }
        let mut summary = Counts::default();
        let mut categories: Vec<Category> = Vec::new();
        for c in &checks {
            summary.add(c.outcome);
            match categories.iter_mut().find(|k| k.id == c.category) {
                Some(k) => {
                    k.counts.add(c.outcome);
                    k.checks.push(c.id.clone());
                }
                None => {
                    let mut counts = Counts::default();
                    counts.add(c.outcome);
                    categories.push(Category {
                        id: c.category.clone(),
                        title: titles.get(&c.category).cloned().unwrap_or_default(),
                        checks: vec![c.id.clone()],
                        counts,
                    });
                }
            }
        }
        let rank_of = |id: &str| {
            checks
                .iter()
                .find(|c| c.id == id)
                .map_or(0, |c| c.outcome.rank())
        };
        for k in &mut categories {
            k.checks.sort_by_key(|id| std::cmp::Reverse(rank_of(id)));
        }
        categories.sort_by(|a, b| {
            (b.counts.abnormal(), b.counts.warning, &a.id).cmp(&(
                a.counts.abnormal(),
                a.counts.warning,
                &b.id,
            ))
        });
        let order: Vec<String> = categories.iter().flat_map(|k| k.checks.clone()).collect();
        checks.sort_by_key(|c| order.iter().position(|id| *id == c.id));
        let target = meta.get(keys::TARGET).cloned().filter(|t| !t.is_empty());
        Ok(Report {
            schema_version: SCHEMA_VERSION,
            run_id: run.id.to_string(),
            cluster: Cluster {
                server: get(keys::SERVER),
                version: get(keys::VERSION),
                cluster_type: get(keys::TYPE),
            },
            workflow: run.workflow.clone(),
            scenario: get(keys::SCENARIO),
            target,
            time: run.created_at,
            run_state: run.state.as_str().to_owned(),
            summary,
            categories,
            checks,
        })
    }

    /// Whether a check failed: the report's exit code is 1.
    pub fn has_failed(&self) -> bool {
        self.summary.failed > 0
    }

    /// Whether a check could not be checked: exit code 3 when none failed.
    pub fn has_error(&self) -> bool {
        self.summary.error > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::text::{self, Style};
    use kpilot_engine::state::RunState;
    use kpilot_engine::RunId;
    use serde_json::json;

    const WORKFLOW: &str = r#"
apiVersion: kpilot/v1
kind: Workflow
metadata:
  name: inspect-patrol
  annotations: {kpilot.io/report: v1, kpilot.io/scenario: patrol, kpilot.io/cluster-server: "https://10.0.0.1:6443", kpilot.io/cluster-version: v1.34.4, kpilot.io/cluster-type: managed}
spec:
  steps:
    - id: disks
      phase: patrol
      annotations: {kpilot.io/title: Disks have room, kpilot.io/category: cluster-resources/nodes, kpilot.io/category-title: Nodes, kpilot.io/severity: error, kpilot.io/remediation: Free space on the node so that the kubelet does not start evicting pods long before anyone looks., kpilot.io/remediation-url: "https://kubernetes.io/docs/"}
      check: {query: node.disks, expect: "true"}
    - id: dns
      phase: patrol
      annotations: {kpilot.io/title: CoreDNS is healthy, kpilot.io/category: components/coredns, kpilot.io/category-title: CoreDNS, kpilot.io/severity: warning, kpilot.io/remediation: Roll it out.}
      check: {query: cluster.addons, expect: "true"}
    - id: lb
      phase: patrol
      annotations: {kpilot.io/title: The load balancer answers, kpilot.io/category: cluster-resources/apiserver-lb, kpilot.io/category-title: API server load balancer, kpilot.io/severity: error, kpilot.io/remediation: Look at the cloud console.}
      check: {query: {command: [lb.sh]}, expect: "true"}
    - id: fine
      phase: patrol
      annotations: {kpilot.io/title: All fine, kpilot.io/category: components/coredns, kpilot.io/category-title: CoreDNS, kpilot.io/severity: error, kpilot.io/remediation: x}
      check: {query: cluster.version, expect: "true"}
"#;

    fn record(state: StepState, output: Value) -> StepRecord {
        StepRecord {
            state,
            output: Some(output),
            reason: Some("why".into()),
            ..StepRecord::pending()
        }
    }

    /// A failed run `id` of `workflow`, whose kept source is `source`.
    fn failed_run(id: &str, workflow: &str, source: &str) -> RunRecord {
        RunRecord {
            id: RunId::parse(id).expect("id"),
            workflow: workflow.into(),
            file: "x".into(),
            source: source.into(),
            params: Default::default(),
            workdir: "/".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            state: RunState::Failed,
            approvals: Default::default(),
        }
    }

    fn report() -> Report {
        let run = failed_run("inspect-patrol-1", "inspect-patrol", WORKFLOW);
        let step = |s: &str| StepId::parse(s).expect("step");
        let long = "x".repeat(150);
        let steps = vec![
            (
                step("disks"),
                InstanceId::named("node-a"),
                record(
                    StepState::Succeeded,
                    json!({"outcome": "passed", "message": "ok"}),
                ),
            ),
            (
                step("disks"),
                InstanceId::named("node-b"),
                record(
                    StepState::Failed,
                    json!({"outcome": "failed", "message": format!("/var is 93% full {long}"), "query": "node.disks on node-b", "items": []}),
                ),
            ),
            (
                step("dns"),
                InstanceId::global(),
                record(
                    StepState::Succeeded,
                    json!({"outcome": "warning", "message": "1 of 1 items failed", "query": "cluster.addons", "items": [{"name": "coredns", "message": "coredns is not rolled out", "object": {"kind": "Deployment", "namespace": "kube-system", "name": "coredns"}}]}),
                ),
            ),
            (
                step("lb"),
                InstanceId::global(),
                record(
                    StepState::Failed,
                    json!({"outcome": "failed", "message": "the check could not read its data: exit 2", "error": "exit 2", "failed": []}),
                ),
            ),
            (
                step("fine"),
                InstanceId::global(),
                record(
                    StepState::Succeeded,
                    json!({"outcome": "passed", "message": "cluster.version passed", "query": "cluster.version"}),
                ),
            ),
        ];
        Report::from_run(&run, &steps).expect("a report")
    }

    #[test]
    fn outcomes_items_and_order_come_from_the_run() {
        let r = report();
        assert_eq!(r.cluster.cluster_type, "managed");
        assert_eq!(
            r.summary,
            Counts {
                passed: 1,
                warning: 1,
                failed: 1,
                error: 1
            }
        );
        let disks = r.checks.iter().find(|c| c.id == "disks").expect("disks");
        assert_eq!(disks.outcome, Outcome::Failed, "the worst node decides");
        assert_eq!(disks.items.len(), 1);
        assert_eq!(disks.items[0].node.as_deref(), Some("node-b"));
        assert_eq!(
            disks.items[0].object.as_ref().map(|o| o.kind.as_str()),
            Some("Node")
        );
        assert!(
            disks
                .message
                .starts_with("1 of 2 nodes did not pass: node-b"),
            "{}",
            disks.message
        );
        let lb = r.checks.iter().find(|c| c.id == "lb").expect("lb");
        assert_eq!(lb.outcome, Outcome::Error);
        assert!(
            lb.message.starts_with("could not check: "),
            "{}",
            lb.message
        );
        let dns = r.checks.iter().find(|c| c.id == "dns").expect("dns");
        assert_eq!(dns.outcome, Outcome::Warning);
        assert_eq!(
            dns.items[0].object.as_ref().map(|o| o.name.as_str()),
            Some("coredns")
        );
        // Categories with something abnormal first; CoreDNS (a warning) last.
        let ids: Vec<&str> = r.categories.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "cluster-resources/apiserver-lb",
                "cluster-resources/nodes",
                "components/coredns"
            ]
        );
        assert_eq!(
            r.categories[2].checks,
            ["dns", "fine"],
            "worst first within a category"
        );
        let json = crate::render::json::render(&r);
        let v: Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(v["schemaVersion"], 1);
        assert_eq!(v["cluster"]["type"], "managed");
        assert!(v["checks"][0]["items"].is_array());
        assert!(v.get("target").is_none(), "a patrol has no target");
    }

    #[test]
    fn text_is_plain_or_coloured_and_never_wider_than_100_columns() {
        let r = report();
        let plain = text::render(&r, Style { colour: false });
        assert!(!plain.contains('\x1b'));
        assert!(
            plain.lines().all(|l| l.chars().count() <= text::WIDTH),
            "{plain}"
        );
        let abnormal = plain.find("ABNORMAL (1)").expect("abnormal");
        let unchecked = plain.find("COULD NOT CHECK (1)").expect("could not check");
        let warning = plain.find("WARNING (1)").expect("warning");
        assert!(abnormal < unchecked && unchecked < warning, "{plain}");
        assert!(plain.contains("[node-b] /var is 93% full"), "{plain}");
        assert!(
            plain.contains("4 checks: 1 normal, 1 warning, 2 abnormal (1 could not be checked)"),
            "{plain}"
        );
        let coloured = text::render(&r, Style { colour: true });
        assert!(coloured.contains("\x1b[31m"), "red for abnormal");
        let stripped: String = {
            let mut out = String::new();
            let mut skip = false;
            for ch in coloured.chars() {
                match (skip, ch) {
                    (_, '\x1b') => skip = true,
                    (true, 'm') => skip = false,
                    (true, _) => {}
                    (false, c) => out.push(c),
                }
            }
            out
        };
        assert_eq!(stripped, plain, "colour changes nothing else");
    }

    #[test]
    fn every_run_has_a_report_each_step_a_check_of_its_own() {
        let source = r#"
apiVersion: kpilot/v1
kind: Workflow
metadata: {name: w}
spec:
  steps:
    - {id: ok, phase: pre-check, command: ["true"]}
    - {id: boom, phase: upgrade, command: ["false"]}
    - {id: after-boom, phase: post-check, needs: [boom], command: ["true"]}
    - {id: not-wanted, phase: post-check, when: "false", command: ["true"]}
    - {id: on-failure, phase: post-check, needs: [{step: ok, on: failure}], command: ["true"]}
    - {id: fix, phase: repair, command: ["true"]}
    - id: roll
      phase: upgrade
      group:
        steps:
          - {id: cordon, cordon: {}}
"#;
        let run = failed_run("w-1", "w", source);
        let step = |s: &str| StepId::parse(s).expect("step");
        let rec = |state, reason: Option<&str>, skip| StepRecord {
            state,
            attempts: u32::from(state != StepState::Skipped && state != StepState::Pending),
            reason: reason.map(str::to_owned),
            skip,
            ..StepRecord::pending()
        };
        let g = InstanceId::global;
        let steps = vec![
            (step("ok"), g(), rec(StepState::Succeeded, None, None)),
            (
                step("boom"),
                g(),
                rec(StepState::Failed, Some("exit code 1"), None),
            ),
            (
                step("after-boom"),
                g(),
                rec(
                    StepState::Skipped,
                    Some("boom failed"),
                    Some(SkipCause::Need { step: step("boom") }),
                ),
            ),
            (
                step("not-wanted"),
                g(),
                rec(StepState::Skipped, None, Some(SkipCause::Condition)),
            ),
            (
                step("on-failure"),
                g(),
                rec(
                    StepState::Skipped,
                    None,
                    Some(SkipCause::Need { step: step("ok") }),
                ),
            ),
            (step("fix"), g(), rec(StepState::Pending, None, None)),
            (
                step("roll.cordon"),
                InstanceId::named("node-a"),
                rec(StepState::Failed, Some("no such node"), None),
            ),
        ];
        let r = Report::from_run(&run, &steps).expect("a report");
        assert_eq!(r.workflow, "w");
        assert_eq!(r.scenario, "");
        let by = |id: &str| r.checks.iter().find(|c| c.id == id).expect(id);
        assert_eq!(by("ok").outcome, Outcome::Passed);
        assert_eq!(by("ok").category, "phases/pre-check");
        let boom = by("boom");
        assert_eq!(boom.outcome, Outcome::Failed);
        assert_eq!(boom.message, "exit code 1");
        assert_eq!(
            boom.remediation.text,
            "`kpilot logs w-1 boom` shows what the step printed"
        );
        let after = by("after-boom");
        assert_eq!(
            after.outcome,
            Outcome::Error,
            "it did not run: not known to hold"
        );
        assert!(after.message.contains("`boom` failed"), "{}", after.message);
        assert_eq!(
            after.remediation.text,
            "`kpilot status w-1` shows why the step did not run"
        );
        assert_eq!(by("not-wanted").outcome, Outcome::Passed);
        assert_eq!(
            by("on-failure").outcome,
            Outcome::Passed,
            "it runs only on failure"
        );
        assert!(
            r.checks.iter().all(|c| c.id != "fix"),
            "an unneeded repair is left out"
        );
        let cordon = by("roll.cordon");
        assert_eq!(cordon.outcome, Outcome::Failed);
        assert_eq!(cordon.items[0].node.as_deref(), Some("node-a"));
        assert_eq!(
            r.summary,
            Counts {
                passed: 3,
                warning: 0,
                failed: 2,
                error: 1
            }
        );
        let upgrade = r
            .categories
            .iter()
            .find(|k| k.id == "phases/upgrade")
            .expect("upgrade");
        assert_eq!(upgrade.title, "Upgrade");
        assert_eq!(upgrade.counts.failed, 2);
        let json: Value = serde_json::from_str(&crate::render::json::render(&r)).expect("JSON");
        assert!(
            json.get("scenario").is_none(),
            "a workflow run has no scenario"
        );
        assert_eq!(json["workflow"], "w");
    }

    #[test]
    fn a_run_whose_workflow_is_not_yaml_is_refused() {
        let run = RunRecord {
            id: RunId::parse("w-1").expect("id"),
            workflow: "w".into(),
            file: "x".into(),
            source: ":\n  - [".into(),
            params: Default::default(),
            workdir: "/".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            state: RunState::Succeeded,
            approvals: Default::default(),
        };
        assert!(matches!(
            Report::from_run(&run, &[]),
            Err(ReportError::Workflow { .. })
        ));
    }
}
