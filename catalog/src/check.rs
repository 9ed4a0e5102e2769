//! A catalog check: a `kind: Check` document, and the catalog of them.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use crate::applies::{AppliesTo, ClusterType, Range, Scenario};
use crate::{CatalogError, Result};

/// The categories a check belongs to: a two-level tree, as an operator
/// reads a report. `(id, title)`; the first level is the part before `/`.
pub const CATEGORIES: &[(&str, &str)] = &[
    ("cluster-resources", "Cluster resources"),
    ("cluster-resources/apiserver-lb", "API server load balancer"),
    ("cluster-resources/network", "Network"),
    ("cluster-resources/nodes", "Nodes"),
    ("cluster-resources/cloud", "Cloud resources"),
    ("components", "Cluster components"),
    ("components/control-plane", "Control plane"),
    ("components/etcd", "etcd"),
    ("components/kube-proxy", "kube-proxy"),
    ("components/cni", "CNI"),
    ("components/coredns", "CoreDNS"),
    ("components/addons", "Add-ons"),
    ("workloads", "Workloads"),
    ("workloads/apis", "API versions"),
    ("workloads/availability", "Availability"),
    ("workloads/security", "Security"),
];

/// The title of a category id, when it is one.
pub fn category_title(id: &str) -> Option<&'static str> {
    CATEGORIES.iter().find(|(c, _)| *c == id).map(|(_, t)| *t)
}

/// The params every inspect run has; a check reads them as `params.NAME`
/// and may not declare its own of these names.
pub const RUN_PARAMS: &[(&str, &str)] = &[
    ("to", "the upgrade target, like 1.16; empty in a patrol"),
    (
        "from",
        "the cluster's version, like 1.34.4; empty without a cluster",
    ),
    (
        "cluster",
        "\"true\" when the cluster is read, \"false\" with --no-cluster",
    ),
    ("manifests", "the --manifests paths, one per line"),
    (
        "apiVersions",
        "extra API-version rows (pluto's format), as JSON",
    ),
    (
        "annotations",
        "extra annotation keys to read, comma separated",
    ),
];

/// A param a check declares.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its name: `params.NAME` in the check.
    pub name: String,
    /// The value unless a report overrides it.
    pub default: String,
    /// What it means.
    pub description: Option<String>,
}

/// What a person should do when the check fails.
#[derive(Debug, Clone, Default)]
pub struct Remediation {
    /// One or two sentences.
    pub text: String,
    /// Where to read more.
    pub url: Option<String>,
}

/// What a check's data needs to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing outside kpilot: a user command, manifest files.
    Nothing,
    /// The Kubernetes API.
    Cluster,
    /// The node agents (`node.*` queries).
    Nodes,
}

/// One `kind: Check` document.
#[derive(Debug, Clone)]
pub struct CatalogCheck {
    /// `metadata.name`: the check's id, and the id of its step.
    pub id: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// A one-line title.
    pub title: String,
    /// A category of [`CATEGORIES`] (second level).
    pub category: String,
    /// Where it applies.
    pub applies: AppliesTo,
    /// Its own params.
    pub params: Vec<Param>,
    /// `executor`, when not global.
    pub executor: Option<String>,
    /// The `check:` body as written.
    pub check: Mapping,
    /// What to do when it fails.
    pub remediation: Remediation,
    /// A repair step body, run when the check fails; then the check runs again.
    pub repair: Option<Value>,
    /// The file it came from.
    pub file: String,
}

impl CatalogCheck {
    /// The severity written in the check body (`error` unless it says).
    pub fn severity(&self) -> &str {
        self.check
            .get("severity")
            .and_then(Value::as_str)
            .unwrap_or("error")
    }

    /// What reading its data needs, from the shape of its query.
    pub fn needs(&self) -> Needs {
        match self.check.get("query") {
            Some(Value::String(path)) if path.trim().starts_with("node.") => Needs::Nodes,
            Some(Value::String(_)) => Needs::Cluster,
            Some(Value::Mapping(m)) if m.contains_key("command") => Needs::Nothing,
            // Removed-API detection reads the cluster only when the run's
            // `cluster` param says so, and manifests in any case.
            Some(Value::Mapping(m)) if m.contains_key("removedApis") => Needs::Nothing,
            _ => Needs::Cluster,
        }
    }
}

const CHECK_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "title",
    "category",
    "appliesTo",
    "params",
    "executor",
    "check",
    "remediation",
    "repair",
];

/// Whether `name` is a step id: lowercase letters, digits and `-`.
pub(crate) fn is_id(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The documents of a YAML file, in order.
pub(crate) fn documents(file: &str, text: &str) -> Result<Vec<Value>> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| CatalogError::File {
            file: file.to_owned(),
            message: format!("document {} is not YAML: {e}", i + 1),
        })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// A list of names (a single name counts as a list of one; null as none).
pub(crate) fn texts(v: &Value, field: &str) -> std::result::Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("`{field}` must be a list of names"))
            })
            .collect(),
        _ => Err(format!("`{field}` must be a list of names")),
    }
}

/// Reads a string map (`labels`, `params` overrides).
pub(crate) fn string_map(
    v: &Value,
    field: &str,
) -> std::result::Result<BTreeMap<String, String>, String> {
    let Value::Mapping(m) = v else {
        return Err(format!("`{field}` must be a mapping of names to texts"));
    };
    m.iter()
        .map(|(k, v)| {
            let key = k
                .as_str()
                .ok_or_else(|| format!("`{field}` keys must be names"))?;
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                _ => return Err(format!("`{field}.{key}` must be a text; quote it")),
            };
            Ok((key.to_owned(), value))
        })
        .collect()
}

impl CatalogCheck {
    /// Parses document `index` (0-based) of `file`, a `kind: Check`.
    pub fn parse(file: &str, index: usize, doc: &Value) -> Result<CatalogCheck> {
        let Value::Mapping(map) = doc else {
            return Err(CatalogError::File {
                file: file.to_owned(),
                message: format!("document {} is not a mapping; a check is `apiVersion: kpilot/v1`, `kind: Check`, metadata, title, category, appliesTo, check, remediation", index + 1),
            });
        };
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let at = name
            .clone()
            .unwrap_or_else(|| format!("document {}", index + 1));
        let bad = |message: String| CatalogError::Check {
            file: file.to_owned(),
            check: at.clone(),
            message,
        };
        for key in map.keys() {
            let k = key.as_str().unwrap_or("");
            if !CHECK_FIELDS.contains(&k) {
                return Err(bad(format!(
                    "unknown field `{k}`; a check has {}",
                    CHECK_FIELDS.join(", ")
                )));
            }
        }
        if map.get("apiVersion").and_then(Value::as_str) != Some("kpilot/v1") {
            return Err(bad("`apiVersion` must be kpilot/v1".into()));
        }
        let Some(id) = name else {
            return Err(bad("`metadata.name` is missing: write the check's id, like `metadata: {name: nodes-ready}`".into()));
        };
        if !is_id(&id) {
            return Err(bad("`metadata.name` must be 1 to 63 lowercase letters, digits and `-` (it is the step id)".into()));
        }
        let metadata = map.get("metadata").and_then(Value::as_mapping);
        if let Some(m) = metadata {
            for key in m.keys() {
                let k = key.as_str().unwrap_or("");
                if !["name", "labels"].contains(&k) {
                    return Err(bad(format!(
                        "unknown field `metadata.{k}`; metadata has name, labels"
                    )));
                }
            }
        }
        let labels = match metadata.and_then(|m| m.get("labels")) {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => string_map(v, "metadata.labels").map_err(bad)?,
        };
        let text = |field: &str| -> Result<Option<String>> {
            match map.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
                Some(_) => Err(bad(format!("`{field}` must be a text"))),
            }
        };
        let title = text("title")?.ok_or_else(|| {
            bad("`title` is missing: one line saying what holds when the check passes".into())
        })?;
        let category = text("category")?.ok_or_else(|| {
            bad("`category` is missing; write one of the categories in docs/checks.md, like `category: cluster-resources/nodes`".into())
        })?;
        if !category.contains('/') || category_title(&category).is_none() {
            return Err(bad(format!(
                "`category: {category}` is not a category; write one of {}",
                CATEGORIES
                    .iter()
                    .filter(|(c, _)| c.contains('/'))
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let applies = applies_to(map.get("appliesTo")).map_err(bad)?;
        let params = params(map.get("params")).map_err(bad)?;
        let executor = text("executor")?;
        let Some(Value::Mapping(check)) = map.get("check") else {
            return Err(bad("`check` is missing or not a mapping: write the check body (query, expect, severity, message, forEach, minItems)".into()));
        };
        if check.contains_key("params") {
            return Err(bad("`check.params` is set by the report builder from the check's `params`; declare params at the top level of the check".into()));
        }
        let remediation = match map.get("remediation") {
            Some(Value::String(s)) => Remediation {
                text: s.trim().to_owned(),
                url: None,
            },
            Some(Value::Mapping(m)) => {
                for key in m.keys() {
                    let k = key.as_str().unwrap_or("");
                    if !["text", "url"].contains(&k) {
                        return Err(bad(format!("unknown field `remediation.{k}`; remediation has text, url")));
                    }
                }
                let text = m.get("text").and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty());
                let Some(text) = text else {
                    return Err(bad("`remediation.text` is missing: say what a person should do".into()));
                };
                Remediation {
                    text: text.to_owned(),
                    url: m.get("url").and_then(Value::as_str).map(str::to_owned),
                }
            }
            _ => {
                return Err(bad(
                    "`remediation` is missing: write `remediation: {text: what to do, url: a documentation link}`".into(),
                ))
            }
        };
        let repair = match map.get("repair") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Mapping(m)) if m.len() == 1 => Some(v.clone()),
            Some(_) => {
                return Err(bad(
                    "`repair` must be one step body, like `repair: {script: \"...\"}` or `repair: {command: [...]}`".into(),
                ))
            }
        };
        if repair.is_some() && executor.is_some() {
            return Err(bad(
                "a check with `repair` runs on the global executor; remove `executor` or `repair`"
                    .into(),
            ));
        }
        Ok(CatalogCheck {
            id,
            labels,
            title,
            category,
            applies,
            params,
            executor,
            check: check.clone(),
            remediation,
            repair,
            file: file.to_owned(),
        })
    }
}

fn applies_to(v: Option<&Value>) -> std::result::Result<AppliesTo, String> {
    let hint = "write `appliesTo: {scenarios: [upgrade-pre, patrol]}` (and optionally versions, targets, clusterTypes)";
    let Some(Value::Mapping(m)) = v else {
        return Err(format!("`appliesTo` is missing; {hint}"));
    };
    for key in m.keys() {
        let k = key.as_str().unwrap_or("");
        if !["scenarios", "versions", "targets", "clusterTypes"].contains(&k) {
            return Err(format!("unknown field `appliesTo.{k}`; {hint}"));
        }
    }
    let scenarios = match m.get("scenarios") {
        Some(v) => texts(v, "appliesTo.scenarios")?
            .iter()
            .map(|s| match s.as_str() {
                "upgrade-pre" | "upgrade-post" | "patrol" => Ok(Scenario::parse(s).unwrap_or(Scenario::Patrol)),
                other => Err(format!("`appliesTo.scenarios` has `{other}`; write upgrade-pre, upgrade-post or patrol")),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    if scenarios.is_empty() {
        return Err(format!("`appliesTo.scenarios` is missing or empty; {hint}"));
    }
    let range = |field: &str| -> std::result::Result<Option<Range>, String> {
        match m.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Range::parse(s)
                .map(Some)
                .map_err(|e| format!("`appliesTo.{field}`: {e}")),
            Some(_) => Err(format!(
                "`appliesTo.{field}` must be a quoted range, like \">=1.12, <1.16\""
            )),
        }
    };
    let cluster_types = match m.get("clusterTypes") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => texts(v, "appliesTo.clusterTypes")?
            .iter()
            .map(|t| {
                ClusterType::parse(t).ok_or_else(|| {
                    format!(
                        "`appliesTo.clusterTypes` has `{t}`; write any of {}",
                        ClusterType::names()
                    )
                })
            })
            .collect::<std::result::Result<_, _>>()?,
    };
    Ok(AppliesTo {
        scenarios,
        versions: range("versions")?,
        targets: range("targets")?,
        cluster_types,
    })
}

fn params(v: Option<&Value>) -> std::result::Result<Vec<Param>, String> {
    let hint = "write `params: [{name: nodeSelector, default: \"\", description: ...}]`";
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Sequence(items)) => items,
        Some(_) => return Err(format!("`params` must be a list; {hint}")),
    };
    let mut out: Vec<Param> = Vec::new();
    for item in items {
        let Value::Mapping(m) = item else {
            return Err(format!("each of `params` must be a mapping; {hint}"));
        };
        let name = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(format!("a param's `name` must be letters, digits, `-` and `_`, starting with a letter; {hint}"));
        }
        if RUN_PARAMS.iter().any(|(p, _)| *p == name) {
            return Err(format!("param `{name}` is one every inspect run sets; read it as `params.{name}` without declaring it"));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(format!("param `{name}` is declared twice"));
        }
        let default = match m.get("default") {
            None | Some(Value::Null) => {
                return Err(format!("param `{name}` has no `default`; a catalog check runs with no one to ask, so give one (\"\" for none)"))
            }
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(_) => return Err(format!("param `{name}`: `default` must be a text; quote it")),
        };
        out.push(Param {
            name,
            default,
            description: m
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }
    Ok(out)
}

/// Checks, by id, in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Every check.
    pub checks: Vec<CatalogCheck>,
}

impl Catalog {
    /// The checks kpilot ships ([`crate::shipped`]).
    pub fn shipped() -> Result<Catalog> {
        let mut catalog = Catalog::default();
        for (file, text) in crate::shipped::FILES {
            catalog.add_file(file, text)?;
        }
        Ok(catalog)
    }

    /// Adds the `kind: Check` documents of a file; other kinds are refused.
    pub fn add_file(&mut self, file: &str, text: &str) -> Result<()> {
        for (i, doc) in documents(file, text)?.iter().enumerate() {
            match doc.get("kind").and_then(Value::as_str) {
                Some("Check") => self.add(CatalogCheck::parse(file, i, doc)?)?,
                other => {
                    return Err(CatalogError::File {
                        file: file.to_owned(),
                        message: format!(
                        "document {} is `kind: {}`; a catalog file holds `kind: Check` documents",
                        i + 1,
                        other.unwrap_or("(none)")
                    ),
                    })
                }
            }
        }
        Ok(())
    }

    /// Adds one check; its id must be new.
    pub fn add(&mut self, check: CatalogCheck) -> Result<()> {
        if let Some(first) = self.get(&check.id) {
            return Err(CatalogError::Duplicate {
                file: check.file.clone(),
                check: check.id.clone(),
                first: first.file.clone(),
            });
        }
        self.checks.push(check);
        Ok(())
    }

    /// The check of this id.
    pub fn get(&self, id: &str) -> Option<&CatalogCheck> {
        self.checks.iter().find(|c| c.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: kpilot/v1
kind: Check
metadata: {name: nodes-ready, labels: {area: nodes}}
title: Every node is Ready
category: cluster-resources/nodes
appliesTo: {scenarios: [upgrade-pre, patrol], versions: ">=1.12"}
params: [{name: nodeSelector, default: ""}]
check:
  query: {cluster: nodes, labelSelector: "{{params.nodeSelector}}"}
  forEach: true
  expect: item.ready
remediation: {text: Find out why the kubelet does not report Ready., url: "https://kubernetes.io/docs/concepts/architecture/nodes/"}
"#;

    #[test]
    fn a_check_parses_and_says_what_it_needs() {
        let mut catalog = Catalog::default();
        catalog.add_file("a.yaml", GOOD).expect("parses");
        let c = catalog.get("nodes-ready").expect("there");
        assert_eq!(c.category, "cluster-resources/nodes");
        assert_eq!(c.severity(), "error");
        assert_eq!(c.needs(), Needs::Cluster);
        assert_eq!(c.params[0].name, "nodeSelector");
        assert_eq!(c.labels["area"], "nodes");
        let again = catalog.add_file("b.yaml", GOOD).expect_err("duplicate");
        assert!(
            again
                .to_string()
                .contains("defined twice (first in a.yaml)"),
            "{again}"
        );
    }

    #[test]
    fn mistakes_name_the_file_the_check_and_the_fix() {
        for (change, want) in [
            (
                "category: cluster-resources/nodes",
                "category: nodes",
                "is not a category",
            ),
            (
                "title: Every node is Ready",
                "titel: x",
                "unknown field `titel`",
            ),
            (
                "scenarios: [upgrade-pre, patrol]",
                "scenarios: [upgrade]",
                "write upgrade-pre, upgrade-post or patrol",
            ),
            (
                "versions: \">=1.12\"",
                "versions: \"about 1.12\"",
                "not a version range",
            ),
            ("default: \"\"", "description: x", "has no `default`"),
            (
                "name: nodeSelector",
                "name: to",
                "one every inspect run sets",
            ),
            (
                "name: nodes-ready,",
                "name: Nodes_Ready,",
                "lowercase letters",
            ),
        ]
        .map(|(a, b, w)| ((a, b), w))
        {
            let text = GOOD.replace(change.0, change.1);
            let mut catalog = Catalog::default();
            let e = catalog
                .add_file("cat.yaml", &text)
                .expect_err(change.1)
                .to_string();
            assert!(e.starts_with("cat.yaml: "), "{e}");
            assert!(e.contains(want), "{change:?}: {e}");
        }
        let workflow = "apiVersion: kpilot/v1\nkind: Workflow\n";
        let e = Catalog::default()
            .add_file("w.yaml", workflow)
            .expect_err("not a check");
        assert!(e.to_string().contains("`kind: Workflow`"), "{e}");
    }

    #[test]
    fn the_shipped_catalog_parses() {
        let catalog = Catalog::shipped().expect("shipped catalog");
        for c in &catalog.checks {
            assert!(
                c.remediation.url.is_some(),
                "{} has no documentation link",
                c.id
            );
        }
    }
}
