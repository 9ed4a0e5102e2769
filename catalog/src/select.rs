//! Which checks a report runs: the catalog and the report's own checks,
//! chosen by the report, then kept when they apply to the cluster and their
//! data can be read.

use std::collections::BTreeMap;

use crate::applies::Facts;
use crate::check::{category_title, Catalog, CatalogCheck, Needs};
use crate::spec::ReportSpec;
use crate::{CatalogError, Result};

/// A check the report runs, with what the report made of it.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The check.
    pub check: CatalogCheck,
    /// Its severity: the report's override, else the check's own.
    pub severity: String,
    /// Its params: defaults, then the report's `params`, then its override.
    pub params: BTreeMap<String, String>,
}

/// What a report runs, and what it leaves out and why.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The checks, in catalog order, then the report's own.
    pub checks: Vec<Chosen>,
    /// `(id, why)` of every check not run.
    pub left_out: Vec<(String, String)>,
}

/// Chooses the checks of `catalog` (plus `spec`'s own) that `spec` selects
/// and that apply to `facts`. A report that names a check, category,
/// override or param that does not exist is refused.
pub fn select(catalog: &Catalog, spec: &ReportSpec, facts: &Facts) -> Result<Selection> {
    let mut all = catalog.clone();
    for own in &spec.checks {
        all.add(own.clone())?;
    }
    let bad = |message: String| CatalogError::Report {
        file: spec.file.clone(),
        message,
    };
    let known = |id: &str, field: &str| -> Result<()> {
        if all.get(id).is_some() {
            return Ok(());
        }
        let near = all
            .checks
            .iter()
            .map(|c| c.id.as_str())
            .find(|c| c.contains(id) || id.contains(c))
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        Err(bad(format!(
            "`{field}` names `{id}`, which is no check{near}; `kpilot catalog` lists them"
        )))
    };
    for id in &spec.select.ids {
        known(id, "spec.select.ids")?;
    }
    for id in &spec.exclude {
        known(id, "spec.exclude")?;
    }
    for category in &spec.select.categories {
        if category_title(category).is_none() {
            return Err(bad(format!(
                "`spec.select.categories` names `{category}`, which is no category; docs/checks.md lists them"
            )));
        }
    }
    for o in &spec.overrides {
        known(&o.check, "spec.overrides")?;
        let Some(check) = all.get(&o.check) else {
            continue;
        };
        for name in o.params.keys() {
            if !check.params.iter().any(|p| &p.name == name) {
                return Err(bad(format!(
                    "the override of `{}` sets param `{name}`, which it does not declare; it has {}",
                    o.check,
                    declared(check)
                )));
            }
        }
    }
    for name in spec.params.keys() {
        if !all
            .checks
            .iter()
            .any(|c| c.params.iter().any(|p| &p.name == name))
        {
            return Err(bad(format!(
                "`spec.params` sets `{name}`, which no check declares; `kpilot catalog -o json` lists each check's params"
            )));
        }
    }

    let mut selection = Selection::default();
    for check in &all.checks {
        let own = spec.checks.iter().any(|c| c.id == check.id);
        let chosen = own
            || spec.select.is_empty()
            || spec.select.ids.contains(&check.id)
            || spec.select.categories.iter().any(|c| {
                check.category == *c || check.category.split('/').next() == Some(c.as_str())
            })
            || (!spec.select.labels.is_empty()
                && spec
                    .select
                    .labels
                    .iter()
                    .all(|(k, v)| check.labels.get(k) == Some(v)));
        let why_not = if !chosen {
            Some("not selected by the report".to_owned())
        } else if spec.exclude.contains(&check.id) {
            Some("excluded by the report".to_owned())
        } else if let Some(why) = check.applies.why_not(facts) {
            Some(why)
        } else {
            match check.needs() {
                Needs::Cluster if !facts.cluster => {
                    Some("reads the cluster, and --no-cluster was given".to_owned())
                }
                Needs::Nodes if !facts.nodes => Some(
                    "reads the nodes' agents: give --inventory, or a cluster whose nodes run `kpilot agent`"
                        .to_owned(),
                ),
                _ => None,
            }
        };
        if let Some(why) = why_not {
            selection.left_out.push((check.id.clone(), why));
            continue;
        }
        let o = spec.overrides.iter().find(|o| o.check == check.id);
        let mut params: BTreeMap<String, String> = check
            .params
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    spec.params.get(&p.name).unwrap_or(&p.default).clone(),
                )
            })
            .collect();
        if let Some(o) = o {
            params.extend(o.params.clone());
        }
        selection.checks.push(Chosen {
            check: check.clone(),
            severity: o
                .and_then(|o| o.severity.clone())
                .unwrap_or_else(|| check.severity().to_owned()),
            params,
        });
    }
    Ok(selection)
}

fn declared(check: &CatalogCheck) -> String {
    if check.params.is_empty() {
        "no params".to_owned()
    } else {
        check
            .params
            .iter()
            .map(|p| format!("`{}`", p.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applies::{kube_version, ClusterType, Scenario};

    const CATALOG: &str = r#"
apiVersion: kpilot/v1
kind: Check
metadata: {name: nodes-ready, labels: {area: nodes}}
title: Nodes are Ready
category: cluster-resources/nodes
appliesTo: {scenarios: [upgrade-pre, patrol]}
params: [{name: nodeSelector, default: ""}]
check: {query: cluster.nodes, forEach: true, expect: item.ready}
remediation: {text: x}
---
apiVersion: kpilot/v1
kind: Check
metadata: {name: old-only}
title: Old clusters only
category: components/coredns
appliesTo: {scenarios: [upgrade-pre], versions: "<1.20"}
check: {query: cluster.version, expect: "true", severity: warning}
remediation: {text: x}
---
apiVersion: kpilot/v1
kind: Check
metadata: {name: lb}
title: Load balancer
category: cluster-resources/apiserver-lb
appliesTo: {scenarios: [upgrade-pre], clusterTypes: [managed]}
check: {query: {command: [lb.sh]}, expect: "true"}
remediation: {text: x}
---
apiVersion: kpilot/v1
kind: Check
metadata: {name: disks}
title: Disks
category: cluster-resources/nodes
appliesTo: {scenarios: [upgrade-pre]}
executor: per-node
check: {query: node.disks, expect: "true"}
remediation: {text: x}
"#;

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        c.add_file("cat.yaml", CATALOG).expect("catalog");
        c
    }

    fn facts() -> Facts {
        Facts {
            scenario: Scenario::UpgradePre,
            cluster_version: kube_version("v1.34.4"),
            target: kube_version("1.35"),
            cluster_type: ClusterType::SelfHosted,
            cluster: true,
            nodes: false,
        }
    }

    fn ids(s: &Selection) -> Vec<&str> {
        s.checks.iter().map(|c| c.check.id.as_str()).collect()
    }

    fn why<'a>(s: &'a Selection, id: &str) -> &'a str {
        s.left_out
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, w)| w.as_str())
            .unwrap_or("")
    }

    #[test]
    fn facts_decide_what_applies_and_why_the_rest_does_not() {
        let s = select(&catalog(), &ReportSpec::default(), &facts()).expect("select");
        assert_eq!(ids(&s), ["nodes-ready"]);
        assert!(why(&s, "old-only").contains("<1.20"));
        assert!(why(&s, "lb").contains("managed"));
        assert!(why(&s, "disks").contains("--inventory"));
        let mut managed = facts();
        managed.cluster_type = ClusterType::Managed;
        managed.cluster = false;
        managed.nodes = true;
        let s = select(&catalog(), &ReportSpec::default(), &managed).expect("select");
        assert_eq!(ids(&s), ["lb", "disks"]);
        assert!(why(&s, "nodes-ready").contains("--no-cluster"));
    }

    #[test]
    fn a_report_selects_excludes_and_overrides() {
        let text = "apiVersion: kpilot/v1\nkind: Report\nmetadata: {name: r}\nspec:\n  select: {labels: {area: nodes}}\n  overrides: [{check: nodes-ready, severity: warning, params: {nodeSelector: 'a=b'}}]\n";
        let spec = ReportSpec::parse("r.yaml", text).expect("report");
        let s = select(&catalog(), &spec, &facts()).expect("select");
        assert_eq!(ids(&s), ["nodes-ready"]);
        assert_eq!(s.checks[0].severity, "warning");
        assert_eq!(s.checks[0].params["nodeSelector"], "a=b");
        let text = "apiVersion: kpilot/v1\nkind: Report\nmetadata: {name: r}\nspec:\n  select: {categories: [cluster-resources]}\n  exclude: [nodes-ready]\n";
        let spec = ReportSpec::parse("r.yaml", text).expect("report");
        let s = select(&catalog(), &spec, &facts()).expect("select");
        assert!(ids(&s).is_empty());
        assert_eq!(why(&s, "nodes-ready"), "excluded by the report");
        assert_eq!(why(&s, "old-only"), "not selected by the report");
    }

    #[test]
    fn a_report_naming_what_does_not_exist_is_refused() {
        for (body, want) in [
            (
                "  select: {ids: [nodes-redy]}\n",
                "`nodes-redy`, which is no check",
            ),
            ("  exclude: [nope]\n", "`nope`, which is no check"),
            (
                "  select: {categories: [network]}\n",
                "`network`, which is no category",
            ),
            (
                "  overrides: [{check: nodes-ready, params: {selector: x}}]\n",
                "does not declare; it has `nodeSelector`",
            ),
            ("  params: {nope: x}\n", "no check declares"),
        ] {
            let text = format!(
                "apiVersion: kpilot/v1\nkind: Report\nmetadata: {{name: r}}\nspec:\n{body}"
            );
            let spec = ReportSpec::parse("r.yaml", &text).expect("parses");
            let e = select(&catalog(), &spec, &facts())
                .expect_err(body)
                .to_string();
            assert!(e.starts_with("r.yaml: ") && e.contains(want), "{body}: {e}");
        }
    }
}
