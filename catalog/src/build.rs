//! Composes the workflow a report runs: one step per chosen check, with its
//! title, category, severity and remediation kept as step annotations (the
//! report is built from the run alone), and the report's facts kept as the
//! workflow's annotations.

use serde_yaml::{Mapping, Value};

use crate::applies::Facts;
use crate::check::{category_title, RUN_PARAMS};
use crate::select::{Chosen, Selection};

/// The annotation keys the builder writes and the report reads.
pub mod keys {
    /// On the workflow: the version of this annotation scheme.
    pub const REPORT: &str = "kpilot.io/report";
    /// On the workflow: upgrade-pre, upgrade-post or patrol.
    pub const SCENARIO: &str = "kpilot.io/scenario";
    /// On the workflow: the upgrade target.
    pub const TARGET: &str = "kpilot.io/target";
    /// On the workflow: the API server's address.
    pub const SERVER: &str = "kpilot.io/cluster-server";
    /// On the workflow: the API server's version as it reports it.
    pub const VERSION: &str = "kpilot.io/cluster-version";
    /// On the workflow: the cluster's type.
    pub const TYPE: &str = "kpilot.io/cluster-type";
    /// On the workflow: the report file, when there was one.
    pub const REPORT_FILE: &str = "kpilot.io/report-file";
    /// On a step: the check's title.
    pub const TITLE: &str = "kpilot.io/title";
    /// On a step: the check's category.
    pub const CATEGORY: &str = "kpilot.io/category";
    /// On a step: the title of its category.
    pub const CATEGORY_TITLE: &str = "kpilot.io/category-title";
    /// On a step: error, warning or info.
    pub const SEVERITY: &str = "kpilot.io/severity";
    /// On a step: what to do when it fails.
    pub const REMEDIATION: &str = "kpilot.io/remediation";
    /// On a step: where to read more.
    pub const REMEDIATION_URL: &str = "kpilot.io/remediation-url";
    /// On a repair step: the check it repairs.
    pub const REPAIRS: &str = "kpilot.io/repairs";
}

/// What the builder puts in the run besides the checks.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The API server's address (empty without a cluster).
    pub server: String,
    /// The API server's version as it reports it (`v1.34.4`).
    pub version: String,
    /// `--manifests` paths.
    pub manifests: Vec<String>,
    /// Extra API-version rows, pluto's format.
    pub api_versions: Vec<serde_json::Value>,
    /// Extra annotation keys to read for removed APIs.
    pub annotations: Vec<String>,
    /// The report file, when there was one.
    pub report_file: Option<String>,
    /// Where the shipped driver scripts were written ([`crate::shipped::DRIVERS`]).
    pub drivers: String,
}

fn s(text: impl Into<String>) -> Value {
    Value::String(text.into())
}

fn map(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Mapping(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
}

/// The workflow, as YAML text, that runs `selection` for `facts`.
pub fn workflow(selection: &Selection, facts: &Facts, inputs: &Inputs) -> String {
    let scenario = facts.scenario;
    let target = facts
        .target
        .as_ref()
        .map(|t| format!("{}.{}", t.major, t.minor));
    let mut annotations = Mapping::new();
    let mut note = |k: &str, v: String| {
        annotations.insert(s(k), s(v));
    };
    note(keys::REPORT, "v1".into());
    note(keys::SCENARIO, scenario.as_str().into());
    if let Some(t) = &target {
        note(keys::TARGET, t.clone());
    }
    note(keys::SERVER, inputs.server.clone());
    note(keys::VERSION, inputs.version.clone());
    note(keys::TYPE, facts.cluster_type.as_str().into());
    if let Some(f) = &inputs.report_file {
        note(keys::REPORT_FILE, f.clone());
    }
    let run_params = [
        ("to", target.clone().unwrap_or_default()),
        (
            "from",
            facts
                .cluster_version
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        ("cluster", facts.cluster.to_string()),
        ("manifests", inputs.manifests.join("\n")),
        (
            "apiVersions",
            if inputs.api_versions.is_empty() {
                String::new()
            } else {
                serde_json::Value::Array(inputs.api_versions.clone()).to_string()
            },
        ),
        ("annotations", inputs.annotations.join(",")),
        ("drivers", inputs.drivers.clone()),
    ];
    let params: Vec<Value> = run_params
        .into_iter()
        .map(|(name, value)| {
            let description = RUN_PARAMS
                .iter()
                .find(|(p, _)| *p == name)
                .map(|(_, d)| *d)
                .unwrap_or_default();
            map([
                ("name", s(name)),
                ("default", s(value)),
                ("description", s(description)),
            ])
        })
        .collect();
    let mut steps = Vec::new();
    for chosen in &selection.checks {
        steps.extend(
            check_steps(chosen, scenario.phase(), &chosen.check.id, &[])
                .into_iter()
                .map(Value::Mapping),
        );
    }
    let description = format!(
        "kpilot inspect: the {} checks{} of the catalog that apply to this cluster",
        scenario.as_str(),
        target.map(|t| format!(" for {t}")).unwrap_or_default()
    );
    let workflow = map([
        ("apiVersion", s("kpilot/v1")),
        ("kind", s("Workflow")),
        (
            "metadata",
            map([
                ("name", s(format!("inspect-{}", scenario.as_str()))),
                ("description", s(description)),
                ("annotations", Value::Mapping(annotations)),
            ]),
        ),
        (
            "spec",
            map([
                ("params", Value::Sequence(params)),
                ("steps", Value::Sequence(steps)),
            ]),
        ),
    ]);
    let body = serde_yaml::to_string(&workflow).unwrap_or_default();
    format!("# Built by `kpilot inspect` from the check catalog; `kpilot report RUN` reads its run.\n{body}")
}

/// The step of one chosen check, with id `id` in phase `phase`, then its
/// repair step (`ID-repair`) when it has one. `params` are set in the check's
/// own params over the run's (an upgrade plan gives each hop its `to`).
pub(crate) fn check_steps(
    chosen: &Chosen,
    phase: &str,
    id: &str,
    params: &[(&str, String)],
) -> Vec<Mapping> {
    let c = &chosen.check;
    let mut out = Vec::new();
    let mut step = Mapping::new();
    step.insert(s("id"), s(id));
    step.insert(s("phase"), s(phase));
    let mut notes = Mapping::new();
    notes.insert(s(keys::TITLE), s(c.title.clone()));
    notes.insert(s(keys::CATEGORY), s(c.category.clone()));
    notes.insert(
        s(keys::CATEGORY_TITLE),
        s(category_title(&c.category).unwrap_or_default()),
    );
    notes.insert(s(keys::SEVERITY), s(chosen.severity.clone()));
    notes.insert(s(keys::REMEDIATION), s(c.remediation.text.clone()));
    if let Some(url) = &c.remediation.url {
        notes.insert(s(keys::REMEDIATION_URL), s(url.clone()));
    }
    step.insert(s("annotations"), Value::Mapping(notes));
    if let Some(executor) = &c.executor {
        step.insert(s("executor"), s(executor.clone()));
        // A report wants every node's answer, not a rollout that stops.
        step.insert(
            s("nodes"),
            map([("maxFailures", Value::Number(1_000_000.into()))]),
        );
    }
    let repair_id = format!("{id}-repair");
    if c.repair.is_some() {
        step.insert(s("repair"), s(repair_id.clone()));
    }
    let mut body = Mapping::new();
    let mut values: Vec<(String, String)> = chosen
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in params {
        values.retain(|(name, _)| name != k);
        values.push(((*k).to_owned(), v.clone()));
    }
    if !values.is_empty() {
        body.insert(
            s("params"),
            Value::Mapping(values.into_iter().map(|(k, v)| (s(k), s(v))).collect()),
        );
    }
    for (k, v) in &c.check {
        if k.as_str() != Some("severity") {
            body.insert(k.clone(), v.clone());
        }
    }
    body.insert(s("severity"), s(chosen.severity.clone()));
    step.insert(s("check"), Value::Mapping(body));
    out.push(step);
    if let Some(Value::Mapping(repair)) = &c.repair {
        let mut r = Mapping::new();
        r.insert(s("id"), s(repair_id));
        r.insert(s("phase"), s("repair"));
        r.insert(s("annotations"), map([(keys::REPAIRS, s(id))]));
        for (k, v) in repair {
            r.insert(k.clone(), v.clone());
        }
        out.push(r);
    }
    out
}
