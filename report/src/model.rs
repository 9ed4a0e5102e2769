//! The report model, built from a run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kpilot_engine::state::{RunRecord, StepRecord, StepState};
use kpilot_engine::{InstanceId, StepId};
use serde::Serialize;
use serde_json::Value;
use serde_yaml::Value as Yaml;

/// The version of the JSON this model serialises to; it changes only when a
/// field changes meaning or goes away (new fields may appear).
pub const SCHEMA_VERSION: u32 = 1;

/// The annotation keys the report builder writes (`kpilot_catalog::build::keys`).
mod keys {
    pub const REPORT: &str = "kpilot.io/report";
    pub const SCENARIO: &str = "kpilot.io/scenario";
    pub const TARGET: &str = "kpilot.io/target";
    pub const SERVER: &str = "kpilot.io/cluster-server";
    pub const VERSION: &str = "kpilot.io/cluster-version";
    pub const TYPE: &str = "kpilot.io/cluster-type";
    pub const TITLE: &str = "kpilot.io/title";
    pub const CATEGORY: &str = "kpilot.io/category";
    pub const CATEGORY_TITLE: &str = "kpilot.io/category-title";
    pub const SEVERITY: &str = "kpilot.io/severity";
    pub const REMEDIATION: &str = "kpilot.io/remediation";
    pub const REMEDIATION_URL: &str = "kpilot.io/remediation-url";
}

/// Why a run gives no report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The run was not started by `kpilot inspect`.
    #[error("run {run} is not an inspection (it runs workflow `{workflow}`, not one `kpilot inspect` built)")]
    NotAnInspection {
        /// The run.
        run: String,
        /// Its workflow's name.
        workflow: String,
    },
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

/// A report: what one inspection found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run it was built from.
    pub run_id: String,
    /// The cluster.
    pub cluster: Cluster,
    /// upgrade-pre, upgrade-post or patrol.
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

impl Report {
    /// Builds the report of a run of `kpilot inspect` from what the store
    /// keeps of it.
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
        if !meta.contains_key(keys::REPORT) {
            return Err(ReportError::NotAnInspection {
                run: run.id.to_string(),
                workflow: run.workflow.clone(),
            });
        }
        let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
        let mut checks = Vec::new();
        let mut titles: BTreeMap<String, String> = BTreeMap::new();
        let spec_steps = workflow
            .get("spec")
            .and_then(|s| s.get("steps"))
            .and_then(Yaml::as_sequence)
            .cloned()
            .unwrap_or_default();
        for step in &spec_steps {
            let notes = annotations(Some(step));
            let (Some(id), Some(title)) = (
                step.get("id").and_then(Yaml::as_str),
                notes.get(keys::TITLE),
            ) else {
                continue;
            };
            let note = |k: &str| notes.get(k).cloned().unwrap_or_default();
            let category = note(keys::CATEGORY);
            titles.insert(category.clone(), note(keys::CATEGORY_TITLE));
            let severity = note(keys::SEVERITY);
            let item_outcome = if severity == "error" {
                Outcome::Failed
            } else {
                Outcome::Warning
            };
            let records: Vec<&(StepId, InstanceId, StepRecord)> =
                steps.iter().filter(|(s, _, _)| s.as_str() == id).collect();
            let nodes: Vec<&(StepId, InstanceId, StepRecord)> = records
                .iter()
                .copied()
                .filter(|(_, i, _)| *i != InstanceId::global())
                .collect();
            let (outcome, message, found) = if nodes.is_empty() {
                match records.first() {
                    Some((_, _, record)) => {
                        let (outcome, message) = instance_outcome(record);
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
                }
            } else {
                let mut worst = Outcome::Passed;
                let mut found = Vec::new();
                let mut bad = 0;
                for (_, instance, record) in &nodes {
                    let node = instance.as_str();
                    let (outcome, message) = instance_outcome(record);
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
            };
            checks.push(CheckResult {
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
            });
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
