//! `kind: Report`: a user's customisation of what `kpilot inspect` checks,
//! with zero code: which checks (by category, id or label), which not,
//! severities and params overridden, the user's own checks and API-version
//! rows.
//!
//! ```yaml
//! apiVersion: kpilot/v1
//! kind: Report
//! metadata: {name: prod}
//! spec:
//!   clusterType: managed
//!   select: {categories: [components], ids: [nodes-ready], labels: {area: nodes}}
//!   exclude: [single-replica-deployments]
//!   params: {namespace: prod}
//!   overrides:
//!     - {check: nodes-ready, severity: warning, params: {nodeSelector: "pool=a"}}
//!   apiVersions:
//!     - {version: cert-manager.io/v1alpha2, kind: Certificate, deprecated-in: v1.4.0, removed-in: v1.6.0, replacement-api: cert-manager.io/v1, component: cert-manager}
//! ---
//! apiVersion: kpilot/v1
//! kind: Check        # the user's own checks follow the Report document
//! ...
//! ```

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::applies::ClusterType;
use crate::check::{documents, string_map, texts, CatalogCheck};
use crate::{CatalogError, Result};

/// Which checks a report chooses; empty chooses every check that applies.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Categories (`components/coredns`) or their first level (`components`).
    pub categories: Vec<String>,
    /// Check ids.
    pub ids: Vec<String>,
    /// Labels a check must all have.
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    /// Whether it chooses nothing in particular, so everything.
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty() && self.ids.is_empty() && self.labels.is_empty()
    }
}

/// A change to one check.
#[derive(Debug, Clone, Default)]
pub struct Override {
    /// The check's id.
    pub check: String,
    /// `error`, `warning` or `info`.
    pub severity: Option<String>,
    /// Values for params the check declares.
    pub params: BTreeMap<String, String>,
}

/// A parsed `kind: Report` file.
#[derive(Debug, Clone, Default)]
pub struct ReportSpec {
    /// The file, as given (empty for the default report).
    pub file: String,
    /// `metadata.name`.
    pub name: String,
    /// The cluster's type, unless `--cluster-type` says.
    pub cluster_type: Option<ClusterType>,
    /// Which checks.
    pub select: Selector,
    /// Checks left out, by id.
    pub exclude: Vec<String>,
    /// Params for every check that declares them.
    pub params: BTreeMap<String, String>,
    /// Per-check changes.
    pub overrides: Vec<Override>,
    /// Extra API-version rows, in pluto's format.
    pub api_versions: Vec<serde_json::Value>,
    /// The user's own checks.
    pub checks: Vec<CatalogCheck>,
}

const SPEC_FIELDS: &[&str] = &[
    "clusterType",
    "select",
    "exclude",
    "params",
    "overrides",
    "apiVersions",
];

impl ReportSpec {
    /// Parses a report file: one `kind: Report` document, then any number of
    /// `kind: Check` documents of the user's own.
    pub fn parse(file: &str, text: &str) -> Result<ReportSpec> {
        let bad = |message: String| CatalogError::File {
            file: file.to_owned(),
            message,
        };
        let docs = documents(file, text)?;
        let mut spec = ReportSpec {
            file: file.to_owned(),
            ..ReportSpec::default()
        };
        let mut seen_report = false;
        for (i, doc) in docs.iter().enumerate() {
            match doc.get("kind").and_then(Value::as_str) {
                Some("Check") => spec.checks.push(CatalogCheck::parse(file, i, doc)?),
                Some("Report") if !seen_report => {
                    seen_report = true;
                    spec.report(doc).map_err(bad)?;
                }
                Some("Report") => return Err(bad("a report file holds one `kind: Report` document".into())),
                other => {
                    return Err(bad(format!(
                        "document {} is `kind: {}`; a report file holds one `kind: Report` and any `kind: Check` documents",
                        i + 1,
                        other.unwrap_or("(none)")
                    )))
                }
            }
        }
        if !seen_report {
            return Err(bad("no `kind: Report` document; start the file with `apiVersion: kpilot/v1`, `kind: Report`, `metadata: {name: ...}`, `spec: {...}`".into()));
        }
        Ok(spec)
    }

    fn report(&mut self, doc: &Value) -> std::result::Result<(), String> {
        if doc.get("apiVersion").and_then(Value::as_str) != Some("kpilot/v1") {
            return Err("the Report's `apiVersion` must be kpilot/v1".into());
        }
        self.name = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .ok_or("the Report has no `metadata.name`")?
            .to_owned();
        let spec = match doc.get("spec") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Mapping(m)) => m,
            Some(_) => return Err("the Report's `spec` must be a mapping".into()),
        };
        for key in spec.keys() {
            let k = key.as_str().unwrap_or("");
            if !SPEC_FIELDS.contains(&k) {
                return Err(format!(
                    "unknown field `spec.{k}`; a Report's spec has {}",
                    SPEC_FIELDS.join(", ")
                ));
            }
        }
        if let Some(t) = spec.get("clusterType").filter(|v| !v.is_null()) {
            let t = t.as_str().unwrap_or("");
            self.cluster_type = Some(ClusterType::parse(t).ok_or_else(|| {
                format!(
                    "`spec.clusterType: {t}` is not a cluster type; write one of {}",
                    ClusterType::names()
                )
            })?);
        }
        if let Some(select) = spec.get("select").filter(|v| !v.is_null()) {
            let Value::Mapping(m) = select else {
                return Err("`spec.select` must be a mapping: {categories: [...], ids: [...], labels: {...}}".into());
            };
            for key in m.keys() {
                let k = key.as_str().unwrap_or("");
                if !["categories", "ids", "labels"].contains(&k) {
                    return Err(format!(
                        "unknown field `spec.select.{k}`; it has categories, ids, labels"
                    ));
                }
            }
            self.select.categories = texts(
                m.get("categories").unwrap_or(&Value::Null),
                "spec.select.categories",
            )?;
            self.select.ids = texts(m.get("ids").unwrap_or(&Value::Null), "spec.select.ids")?;
            if let Some(l) = m.get("labels").filter(|v| !v.is_null()) {
                self.select.labels = string_map(l, "spec.select.labels")?;
            }
        }
        self.exclude = texts(spec.get("exclude").unwrap_or(&Value::Null), "spec.exclude")?;
        if let Some(p) = spec.get("params").filter(|v| !v.is_null()) {
            self.params = string_map(p, "spec.params")?;
        }
        if let Some(o) = spec.get("overrides").filter(|v| !v.is_null()) {
            let Value::Sequence(items) = o else {
                return Err("`spec.overrides` must be a list of {check, severity, params}".into());
            };
            for item in items {
                let Value::Mapping(m) = item else {
                    return Err(
                        "each of `spec.overrides` must be a mapping {check, severity, params}"
                            .into(),
                    );
                };
                for key in m.keys() {
                    let k = key.as_str().unwrap_or("");
                    if !["check", "severity", "params"].contains(&k) {
                        return Err(format!("unknown field `{k}` in `spec.overrides`; an override has check, severity, params"));
                    }
                }
                let check = m
                    .get("check")
                    .and_then(Value::as_str)
                    .ok_or("an override has no `check`: name the check's id")?;
                let severity = match m.get("severity") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s))
                        if ["error", "warning", "info"].contains(&s.as_str()) =>
                    {
                        Some(s.clone())
                    }
                    Some(_) => {
                        return Err(format!(
                            "override of `{check}`: `severity` must be error, warning or info"
                        ))
                    }
                };
                let params = match m.get("params") {
                    None | Some(Value::Null) => BTreeMap::new(),
                    Some(p) => string_map(p, &format!("spec.overrides[{check}].params"))?,
                };
                self.overrides.push(Override {
                    check: check.to_owned(),
                    severity,
                    params,
                });
            }
        }
        if let Some(rows) = spec.get("apiVersions").filter(|v| !v.is_null()) {
            let Value::Sequence(items) = rows else {
                return Err("`spec.apiVersions` must be a list of rows in pluto's format ({version, kind, deprecated-in, removed-in, replacement-api})".into());
            };
            for row in items {
                self.api_versions.push(
                    serde_json::to_value(row).map_err(|e| format!("`spec.apiVersions`: {e}"))?,
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_with_its_own_check() {
        let text = r#"
apiVersion: kpilot/v1
kind: Report
metadata: {name: prod}
spec:
  clusterType: managed
  select: {categories: [components], ids: [nodes-ready]}
  exclude: [single-replica-deployments]
  overrides: [{check: nodes-ready, severity: warning, params: {nodeSelector: "pool=a"}}]
  apiVersions: [{version: cert-manager.io/v1alpha2, kind: Certificate, removed-in: v1.6.0}]
---
apiVersion: kpilot/v1
kind: Check
metadata: {name: mine}
title: Mine holds
category: workloads/availability
appliesTo: {scenarios: [patrol]}
check: {query: cluster.version, expect: "true"}
remediation: {text: Fix it.}
"#;
        let spec = ReportSpec::parse("r.yaml", text).expect("parses");
        assert_eq!(spec.cluster_type, Some(ClusterType::Managed));
        assert_eq!(spec.select.ids, ["nodes-ready"]);
        assert_eq!(spec.overrides[0].severity.as_deref(), Some("warning"));
        assert_eq!(spec.overrides[0].params["nodeSelector"], "pool=a");
        assert_eq!(spec.api_versions[0]["kind"], "Certificate");
        assert_eq!(spec.checks[0].id, "mine");
    }

    #[test]
    fn mistakes_are_named() {
        let base = "apiVersion: kpilot/v1\nkind: Report\nmetadata: {name: r}\nspec:\n";
        for (body, want) in [
            ("  clusterType: cloud\n", "not a cluster type"),
            ("  excluded: [a]\n", "unknown field `spec.excluded`"),
            (
                "  overrides: [{check: a, severity: fatal}]\n",
                "error, warning or info",
            ),
            (
                "  select: {kinds: [a]}\n",
                "unknown field `spec.select.kinds`",
            ),
        ] {
            let e = ReportSpec::parse("r.yaml", &format!("{base}{body}"))
                .expect_err(body)
                .to_string();
            assert!(e.starts_with("r.yaml: ") && e.contains(want), "{body}: {e}");
        }
        let e = ReportSpec::parse("r.yaml", "apiVersion: kpilot/v1\nkind: Workflow\n")
            .expect_err("kind");
        assert!(e.to_string().contains("`kind: Workflow`"), "{e}");
    }
}
