//! `kpilot catalog`: the checks `kpilot inspect` chooses from, what each
//! reads and where it applies; `-o markdown` is the catalog section of
//! docs/checks.md. Every check listed is also validated as the step it
//! becomes, so a broken catalog check is found here, not mid-inspection.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kpilot_catalog::applies::{kube_version, ClusterType, Scenario};
use kpilot_catalog::check::{CatalogCheck, CATEGORIES};
use kpilot_catalog::select::{Chosen, Selection};
use kpilot_catalog::{build, Catalog, Facts, ReportSpec};
use serde_json::json;

use super::{regular_file, Usage};
use crate::Exit;

/// How `catalog` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum CatalogFormat {
    /// A table.
    #[default]
    Text,
    /// JSON.
    Json,
    /// Markdown, as in docs/checks.md.
    Markdown,
}

#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Only the checks of this scenario: upgrade (= upgrade-pre), upgrade-post or patrol.
    #[arg(long, value_name = "SCENARIO")]
    scenario: Option<String>,
    /// Only the checks that apply to this upgrade target.
    #[arg(long, value_name = "VERSION")]
    to: Option<String>,
    /// Only the checks that apply to this cluster type.
    #[arg(long, value_name = "TYPE")]
    cluster_type: Option<String>,
    /// Add the own checks of this `kind: Report` file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: CatalogFormat,
}

fn reads(check: &CatalogCheck) -> String {
    match check.check.get("query") {
        Some(serde_yaml::Value::String(path)) => path.trim().to_owned(),
        Some(serde_yaml::Value::Mapping(m)) => {
            if let Some(c) = m.get("cluster").and_then(serde_yaml::Value::as_str) {
                format!("cluster.{c}")
            } else if let Some(r) = m.get("resource") {
                let kind = r
                    .get("kind")
                    .and_then(serde_yaml::Value::as_str)
                    .unwrap_or("?");
                format!("cluster {kind}s")
            } else if m.contains_key("command") {
                "a command (user driver)".to_owned()
            } else if m.contains_key("removedApis") {
                "manifests, last-applied annotations, Helm releases".to_owned()
            } else {
                "?".to_owned()
            }
        }
        _ => "?".to_owned(),
    }
}

fn applies(check: &CatalogCheck) -> String {
    let a = &check.applies;
    let mut parts = Vec::new();
    if let Some(v) = &a.versions {
        parts.push(format!("versions {}", v.text));
    }
    if let Some(t) = &a.targets {
        parts.push(format!("targets {}", t.text));
    }
    if !a.cluster_types.is_empty() {
        parts.push(
            a.cluster_types
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    if parts.is_empty() {
        "all".to_owned()
    } else {
        parts.join("; ")
    }
}

fn scenarios(check: &CatalogCheck) -> String {
    check
        .applies
        .scenarios
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Validates every check as the step it becomes, so that a check whose
/// body is wrong is refused (exit 2) with its id.
fn validate(checks: &[&CatalogCheck]) -> anyhow::Result<()> {
    if checks.is_empty() {
        return Ok(());
    }
    let selection = Selection {
        checks: checks
            .iter()
            .map(|c| Chosen {
                check: (*c).clone(),
                severity: c.severity().to_owned(),
                params: c
                    .params
                    .iter()
                    .map(|p| (p.name.clone(), p.default.clone()))
                    .collect(),
            })
            .collect(),
        left_out: Vec::new(),
    };
    let facts = Facts {
        scenario: Scenario::Patrol,
        cluster_version: None,
        target: None,
        cluster_type: ClusterType::SelfHosted,
        cluster: true,
        nodes: true,
    };
    let text = build::workflow(&selection, &facts, &build::Inputs::default());
    let source = kpilot_engine::WorkflowSource {
        path: PathBuf::from("<catalog>"),
        text,
    };
    kpilot_engine::validate::validate(&source, &kpilot_tasks::registry())?;
    Ok(())
}

pub fn catalog(args: CatalogArgs) -> anyhow::Result<Exit> {
    let mut catalog = Catalog::shipped().map_err(|e| Usage(format!("the shipped catalog: {e}")))?;
    if let Some(path) = &args.report {
        regular_file(path, "a `kind: Report` YAML file")?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| Usage(format!("{}: cannot read the report: {e}", path.display())))?;
        let spec = ReportSpec::parse(&path.display().to_string(), &text)
            .map_err(|e| Usage(e.to_string()))?;
        for own in spec.checks {
            catalog.add(own).map_err(|e| Usage(e.to_string()))?;
        }
    }
    let scenario = match &args.scenario {
        Some(s) => Some(Scenario::parse(s).ok_or_else(|| {
            Usage(format!(
                "--scenario {s} is not a scenario; write upgrade, upgrade-post or patrol"
            ))
        })?),
        None => None,
    };
    let target = match &args.to {
        Some(t) => Some(kube_version(t).ok_or_else(|| {
            Usage(format!(
                "--to {t} is not a Kubernetes version; write e.g. --to 1.16"
            ))
        })?),
        None => None,
    };
    let cluster_type = match &args.cluster_type {
        Some(t) => Some(ClusterType::parse(t).ok_or_else(|| {
            Usage(format!(
                "--cluster-type {t} is not a cluster type; write one of {}",
                ClusterType::names()
            ))
        })?),
        None => None,
    };
    let listed: Vec<&CatalogCheck> = catalog
        .checks
        .iter()
        .filter(|c| {
            let a = &c.applies;
            scenario.is_none_or(|s| a.scenarios.contains(&s))
                && cluster_type
                    .is_none_or(|t| a.cluster_types.is_empty() || a.cluster_types.contains(&t))
                && match (&target, &a.targets) {
                    (Some(t), Some(r)) => r.req.matches(t),
                    _ => true,
                }
        })
        .collect();
    validate(&listed)?;
    match args.output {
        CatalogFormat::Json => {
            let checks: Vec<serde_json::Value> = listed
                .iter()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "title": c.title,
                        "category": c.category,
                        "severity": c.severity(),
                        "scenarios": c.applies.scenarios.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                        "versions": c.applies.versions.as_ref().map(|r| &r.text),
                        "targets": c.applies.targets.as_ref().map(|r| &r.text),
                        "clusterTypes": c.applies.cluster_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                        "labels": c.labels,
                        "params": c.params.iter().map(|p| json!({"name": p.name, "default": p.default, "description": p.description})).collect::<Vec<_>>(),
                        "executor": c.executor.as_deref().unwrap_or("global"),
                        "reads": reads(c),
                        "remediation": {"text": c.remediation.text, "url": c.remediation.url},
                        "repair": c.repair.is_some(),
                        "file": c.file,
                    })
                })
                .collect();
            crate::outln!(
                "{}",
                serde_json::to_string_pretty(&json!({"checks": checks}))?
            )?;
        }
        CatalogFormat::Text => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "{:<32} {:<30} {:<8} TITLE",
                "ID", "CATEGORY", "SEVERITY"
            );
            for c in &listed {
                let line = format!(
                    "{:<32} {:<30} {:<8} {}",
                    c.id,
                    c.category,
                    c.severity(),
                    c.title
                );
                let line: String = line.chars().take(100).collect();
                let _ = writeln!(out, "{}", line.trim_end());
            }
            let _ = writeln!(
                out,
                "{} checks; `-o json` gives each one's params, versions and remediation",
                listed.len()
            );
            crate::out!("{out}")?;
        }
        CatalogFormat::Markdown => crate::out!("{}", markdown(&listed))?,
    }
    Ok(Exit::Passed)
}

/// The catalog as the section of docs/checks.md: per category, a table of
/// its checks, then each check's remediation and params.
fn markdown(checks: &[&CatalogCheck]) -> String {
    let mut out = String::new();
    let mut by_category: BTreeMap<&str, Vec<&CatalogCheck>> = BTreeMap::new();
    for c in checks {
        by_category.entry(c.category.as_str()).or_default().push(c);
    }
    let _ = writeln!(
        out,
        "{} checks. Generated by `kpilot catalog -o markdown`; do not edit by hand.\n",
        checks.len()
    );
    for (id, title) in CATEGORIES {
        if !id.contains('/') {
            let prefix = format!("{id}/");
            if by_category.keys().any(|k| k.starts_with(&prefix)) {
                let _ = writeln!(out, "#### {title} (`{id}`)\n");
            }
            continue;
        }
        let Some(these) = by_category.get(id) else {
            continue;
        };
        let _ = writeln!(out, "##### {title} (`{id}`)\n");
        let _ = writeln!(
            out,
            "| check | what holds when it passes | scenarios | applies to | severity | reads |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for c in these {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} |",
                c.id,
                c.title.replace('|', "\\|"),
                scenarios(c),
                applies(c),
                c.severity(),
                reads(c).replace('|', "\\|")
            );
        }
        out.push('\n');
        for c in these {
            let _ = write!(
                out,
                "- `{}`: {}",
                c.id,
                c.remediation.text.replace('\n', " ")
            );
            if let Some(url) = &c.remediation.url {
                let _ = write!(out, " ([docs]({url}))");
            }
            if !c.params.is_empty() {
                let params: Vec<String> = c
                    .params
                    .iter()
                    .map(|p| format!("`{}` (default `{}`)", p.name, p.default))
                    .collect();
                let _ = write!(out, " Params: {}.", params.join(", "));
            }
            if c.repair.is_some() {
                let _ = write!(out, " Has a repair step.");
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}
