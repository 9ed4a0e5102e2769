//! Upgrade plans: the hops from one Kubernetes version to another, one minor
//! version each, the addon versions each hop needs, and the multi-hop
//! workflow written from the per-hop template `workflows/upgrade/hop.yaml`.
//!
//! Nothing here reads a cluster: the starting version is given (`--from`, or
//! the version the CLI read from the cluster).
//!
//! ```
//! use kpilot_catalog::upgrade::hops;
//!
//! let hops = hops("1.12", "1.16.3").expect("a plan");
//! let targets: Vec<&str> = hops.iter().map(|h| h.to.as_str()).collect();
//! assert_eq!(targets, ["1.13", "1.14", "1.15", "1.16.3"]);
//! ```

use std::collections::BTreeMap;

use semver::Version;
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use crate::applies::{kube_version, ClusterType, Facts, Scenario};
use crate::build::{check_steps, keys};
use crate::check::{Catalog, RUN_PARAMS};
use crate::select::{select, Selection};
use crate::spec::ReportSpec;

/// The addon versions kubeadm pins per minor release (see the file's header).
const ADDONS: &str = include_str!("../../workflows/upgrade/addons.yaml");
const ADDONS_FILE: &str = "workflows/upgrade/addons.yaml";

/// The steps of one hop, repeated per hop.
const HOP_TEMPLATE: &str = include_str!("../../workflows/upgrade/hop.yaml");
const HOP_FILE: &str = "workflows/upgrade/hop.yaml";

/// Why no plan can be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A version is not one.
    #[error("{flag} {text:?} is not a Kubernetes version: write it like 1.16 or 1.16.3")]
    Version {
        /// `--from`, `--to` or `the cluster's version`.
        flag: &'static str,
        /// As given.
        text: String,
    },
    /// The versions do not make an upgrade of hops.
    #[error("{0}")]
    Range(String),
    /// A shipped data file or template is wrong (a bug of kpilot's build).
    #[error("{file}: {message}")]
    Shipped {
        /// The file.
        file: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The addon versions one release needs; `None`: not known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addons {
    /// CoreDNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coredns: Option<String>,
    /// etcd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<String>,
    /// The pause (sandbox) image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddonRow {
    kubernetes: String,
    #[serde(flatten)]
    addons: Addons,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddonFile {
    addons: Vec<AddonRow>,
}

/// The shipped table of addon versions, by `(major, minor)`.
pub fn addon_table() -> Result<BTreeMap<(u64, u64), Addons>, PlanError> {
    let bad = |message: String| PlanError::Shipped {
        file: ADDONS_FILE,
        message,
    };
    let file: AddonFile = serde_yaml::from_str(ADDONS).map_err(|e| bad(e.to_string()))?;
    let mut table = BTreeMap::new();
    for row in file.addons {
        let v = kube_version(&row.kubernetes)
            .ok_or_else(|| bad(format!("`{}` is not a release", row.kubernetes)))?;
        if table.insert((v.major, v.minor), row.addons).is_some() {
            return Err(bad(format!("{} is listed twice", row.kubernetes)));
        }
    }
    Ok(table)
}

/// One hop: one minor version up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// Where it starts: `--from` for the first hop, else the previous hop's target.
    pub from: String,
    /// Its target: a minor (`1.13`); the last hop ends at `--to` as given (`1.16.3`).
    pub to: String,
    /// The versions kubeadm pins for the target's minor; all `None` when not in the table.
    pub addons: Addons,
}

impl Hop {
    /// The target as a part of a step id: `1-13`, `1-16-3`.
    pub fn id(&self) -> String {
        self.to.replace('.', "-")
    }

    fn version(&self) -> Version {
        kube_version(&self.to).unwrap_or_else(|| Version::new(0, 0, 0))
    }

    /// A regular expression (RE2, for CEL's `matches`) of a kubelet version at the hop's
    /// target: the minor (`^v1[.]13[.]`), or the patch when the hop ends at one, with what a
    /// distribution appends (`v1.16.3-eks-1`) but not `v1.16.30`.
    fn kubelet_pattern(&self) -> String {
        let v = self.version();
        if self.to.matches('.').count() >= 2 {
            format!("^v{}[.]{}[.]{}([-+]|$)", v.major, v.minor, v.patch)
        } else {
            format!("^v{}[.]{}[.]", v.major, v.minor)
        }
    }
}

/// A version as given, without `v` and without what a distribution appends
/// (`v1.28.3-eks-1` is `1.28.3`), keeping whether a patch was written.
fn release(text: &str, flag: &'static str) -> Result<(Version, String), PlanError> {
    let bad = || PlanError::Version {
        flag,
        text: text.to_owned(),
    };
    let v = kube_version(text).ok_or_else(bad)?;
    let core = text.trim().trim_start_matches(['v', 'V']);
    let core = core.split(['-', '+']).next().unwrap_or("");
    let shown = match core.matches('.').count() {
        1 => format!("{}.{}", v.major, v.minor),
        2 => v.to_string(),
        _ => return Err(bad()),
    };
    Ok((v, shown))
}

/// The hops from `from` to `to`, one minor version each. `to` may be a minor
/// (`1.16`) or a patch (`1.16.3`, where the last hop ends). A `to` older than
/// `from`, in the same minor, or of another major version, is refused.
pub fn hops(from: &str, to: &str) -> Result<Vec<Hop>, PlanError> {
    hops_as(from, "--from", to)
}

/// [`hops`], naming where `from` came from in errors (`the cluster's version`).
pub fn hops_as(from: &str, from_flag: &'static str, to: &str) -> Result<Vec<Hop>, PlanError> {
    let (f, from_shown) = release(from, from_flag)?;
    let (t, to_shown) = release(to, "--to")?;
    if f.major != t.major {
        return Err(PlanError::Range(format!(
            "{from_flag} {from_shown} and --to {to_shown} are of different major versions; kpilot plans hops of one minor version within a major"
        )));
    }
    if t.minor < f.minor || (t.minor == f.minor && t.patch < f.patch) {
        return Err(PlanError::Range(format!(
            "{from_flag} {from_shown} is newer than --to {to_shown}: kpilot plans upgrades, not downgrades; give a --to newer than {from_shown}"
        )));
    }
    if t.minor == f.minor {
        return Err(PlanError::Range(format!(
            "{from_flag} {from_shown} and --to {to_shown} are the same minor version, so there is no hop to plan (a patch upgrade within {}.{} is one control-plane step); give a later minor, like --to {}.{}",
            f.major,
            f.minor,
            f.major,
            f.minor + 1
        )));
    }
    let table = addon_table()?;
    let mut hops = Vec::new();
    let mut at = from_shown;
    for minor in f.minor + 1..=t.minor {
        let target = if minor == t.minor {
            to_shown.clone()
        } else {
            format!("{}.{minor}", f.major)
        };
        hops.push(Hop {
            from: at,
            to: target.clone(),
            addons: table.get(&(f.major, minor)).cloned().unwrap_or_default(),
        });
        at = target;
    }
    Ok(hops)
}

/// The checks of the catalog a hop runs before (`UpgradePre`) or after
/// (`UpgradePost`) it: those for a self-hosted cluster at the hop's start
/// going to its target, node checks included (the hop's nodes are upgraded
/// through their agents, so the agents are there).
pub fn hop_checks(
    catalog: &Catalog,
    hop: &Hop,
    scenario: Scenario,
) -> Result<Selection, PlanError> {
    let facts = Facts {
        scenario,
        cluster_version: kube_version(&hop.from),
        target: kube_version(&hop.to),
        cluster_type: ClusterType::SelfHosted,
        cluster: true,
        nodes: true,
    };
    select(catalog, &ReportSpec::default(), &facts).map_err(|e| PlanError::Shipped {
        file: "workflows/catalog/",
        message: e.to_string(),
    })
}

fn s(text: impl Into<String>) -> Value {
    Value::String(text.into())
}

/// `{{hop.NAME}}` replaced in the template; any other `{{...}}` (a check's
/// message template) is left as written.
fn fill(template: &str, hop: &Hop) -> Result<String, PlanError> {
    let values = [
        ("id", hop.id()),
        ("to", hop.to.clone()),
        ("from", hop.from.clone()),
        ("kubelet", hop.kubelet_pattern()),
        ("coredns", hop.addons.coredns.clone().unwrap_or_default()),
        ("etcd", hop.addons.etcd.clone().unwrap_or_default()),
        ("pause", hop.addons.pause.clone().unwrap_or_default()),
    ];
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{hop.") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{{hop.".len()..];
        let end = after.find("}}").ok_or_else(|| PlanError::Shipped {
            file: HOP_FILE,
            message: "`{{hop.` is not closed with `}}`".into(),
        })?;
        let name = after[..end].trim();
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| PlanError::Shipped {
                file: HOP_FILE,
                message: format!(
                    "`{{{{hop.{name}}}}}` is no placeholder; there are {}",
                    values
                        .iter()
                        .map(|(n, _)| format!("hop.{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What the workflow says about where it came from.
#[derive(Debug, Clone, Default)]
pub struct WorkflowInputs {
    /// The API server's address, when the cluster was read.
    pub server: String,
    /// The command that wrote it, for its header.
    pub command: String,
}

/// The multi-hop workflow for `hops`, as YAML text: the template's steps per
/// hop, the catalog's pre- and post-checks of each hop in them, and each hop
/// waiting for the previous hop's post-checks.
pub fn workflow(
    catalog: &Catalog,
    hops: &[Hop],
    inputs: &WorkflowInputs,
) -> Result<String, PlanError> {
    let (Some(first), Some(last)) = (hops.first(), hops.last()) else {
        return Err(PlanError::Range("there are no hops to write".into()));
    };
    let mut steps: Vec<Value> = Vec::new();
    let mut previous_post: Vec<String> = Vec::new();
    for hop in hops {
        let text = fill(HOP_TEMPLATE, hop)?;
        let bad = |message: String| PlanError::Shipped {
            file: HOP_FILE,
            message,
        };
        let template: Value = serde_yaml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let Some(Value::Sequence(items)) = template.get("steps") else {
            return Err(bad("it has no `steps:` list".into()));
        };
        // First the steps as they will be, with the catalog's in place; then the
        // needs, once the hop's pre- and post-checks are known.
        let mut hop_steps: Vec<Mapping> = Vec::new();
        for item in items {
            let Value::Mapping(item) = item else {
                return Err(bad("a step is not a mapping".into()));
            };
            match item.get("catalog").and_then(Value::as_str) {
                Some(name) => {
                    let (scenario, prefix) = match name {
                        "upgrade-pre" => (Scenario::UpgradePre, "pre"),
                        "upgrade-post" => (Scenario::UpgradePost, "post"),
                        other => {
                            return Err(bad(format!(
                            "`catalog: {other}` is no scenario; write upgrade-pre or upgrade-post"
                        )))
                        }
                    };
                    let selection = hop_checks(catalog, hop, scenario)?;
                    let mut params = vec![("to", hop.to.clone()), ("from", hop.from.clone())];
                    params.retain(|(_, v)| !v.is_empty());
                    for chosen in &selection.checks {
                        let id = format!("{prefix}-{}-{}", hop.id(), chosen.check.id);
                        for mut step in check_steps(chosen, scenario.phase(), &id, &params) {
                            // The repair step needs nothing: its check names it.
                            if step.get(s("phase")).and_then(Value::as_str) != Some("repair") {
                                if let Some(needs) = item.get("needs") {
                                    step.insert(s("needs"), needs.clone());
                                }
                            }
                            hop_steps.push(step);
                        }
                    }
                }
                None => hop_steps.push(item.clone()),
            }
        }
        let ids_of = |phase: &str| -> Vec<String> {
            hop_steps
                .iter()
                .filter(|st| st.get(s("phase")).and_then(Value::as_str) == Some(phase))
                .filter_map(|st| st.get(s("id")).and_then(Value::as_str).map(str::to_owned))
                .collect()
        };
        let pre = ids_of("pre-check")
            .into_iter()
            .filter(|id| id.starts_with(&format!("pre-{}-", hop.id())))
            .collect::<Vec<_>>();
        let post = ids_of("post-check");
        for step in &mut hop_steps {
            let Some(Value::Sequence(needs)) = step.get(s("needs")).cloned() else {
                continue;
            };
            let mut out: Vec<Value> = Vec::new();
            for need in needs {
                match need.as_str() {
                    Some("@previous-hop") => out.extend(previous_post.iter().cloned().map(s)),
                    Some("@pre-checks") => out.extend(pre.iter().cloned().map(s)),
                    Some("@post-checks") => out.extend(post.iter().cloned().map(s)),
                    Some(other) if other.starts_with('@') => {
                        return Err(bad(format!(
                            "`needs: [{other}]` names no group; there are @previous-hop, @pre-checks and @post-checks"
                        )))
                    }
                    _ => out.push(need),
                }
            }
            if out.is_empty() {
                step.remove(s("needs"));
            } else {
                step.insert(s("needs"), Value::Sequence(out));
            }
        }
        steps.extend(hop_steps.into_iter().map(Value::Mapping));
        previous_post = post;
    }

    let to = &last.to;
    let mut annotations = Mapping::new();
    annotations.insert(s("kpilot.io/plan"), s("upgrade"));
    annotations.insert(s("kpilot.io/from"), s(first.from.clone()));
    annotations.insert(s(keys::TARGET), s(to.clone()));
    annotations.insert(
        s("kpilot.io/hops"),
        s(hops
            .iter()
            .map(|h| h.to.as_str())
            .collect::<Vec<_>>()
            .join(", ")),
    );
    if !inputs.server.is_empty() {
        annotations.insert(s(keys::SERVER), s(inputs.server.clone()));
    }
    let param = |name: &str, default: String, description: &str| {
        let mut m = Mapping::new();
        m.insert(s("name"), s(name));
        m.insert(s("default"), s(default));
        m.insert(s("description"), s(description));
        Value::Mapping(m)
    };
    let described = |name: &str| {
        RUN_PARAMS
            .iter()
            .find(|(p, _)| *p == name)
            .map(|(_, d)| *d)
            .unwrap_or_default()
    };
    let params = vec![
        param("to", to.clone(), described("to")),
        param("from", first.from.clone(), described("from")),
        param("cluster", "true".into(), described("cluster")),
        param("manifests", String::new(), described("manifests")),
        param("apiVersions", String::new(), described("apiVersions")),
        param("annotations", String::new(), described("annotations")),
        param(
            "drivers",
            String::new(),
            "where the catalog's driver scripts are (only the checks of managed clusters run them)",
        ),
        param(
            "controlPlane",
            "echo \"kpilot: replace this with the command that upgrades the control plane from $HOP_FROM to $HOP_TO: --param controlPlane=... (your installer's command, e.g. kubeadm upgrade apply of a $HOP_TO patch release); nothing was changed\" >&2; exit 1".into(),
            "bash run on the kpilot host to upgrade the control plane; it sees HOP_FROM, HOP_TO, HOP_COREDNS, HOP_ETCD and HOP_PAUSE",
        ),
        param(
            "nodeUpgrade",
            "echo \"kpilot: replace this with the command that upgrades node $KPILOT_INSTANCE to $HOP_TO: --param nodeUpgrade='...' (the kubelet package and a restart); nothing was changed\" >&2; exit 1".into(),
            "bash run on each node by its agent, the node drained, to upgrade its kubelet; it sees HOP_FROM, HOP_TO, HOP_PAUSE and KPILOT_INSTANCE",
        ),
    ];
    let mut metadata = Mapping::new();
    metadata.insert(
        s("name"),
        s(format!("upgrade-{}-to-{}", first.from, to).replace('.', "-")),
    );
    metadata.insert(
        s("description"),
        s(format!(
            "Upgrade from {} to {} in {} hop{} of one minor version, each gated by the catalog's pre-checks",
            first.from,
            to,
            hops.len(),
            if hops.len() == 1 { "" } else { "s" }
        )),
    );
    metadata.insert(s("annotations"), Value::Mapping(annotations));
    let mut on_failure = Mapping::new();
    on_failure.insert(s("restore"), Value::Bool(true));
    let mut spec = Mapping::new();
    spec.insert(s("params"), Value::Sequence(params));
    spec.insert(s("onFailure"), Value::Mapping(on_failure));
    spec.insert(s("steps"), Value::Sequence(steps));
    let mut doc = Mapping::new();
    doc.insert(s("apiVersion"), s("kpilot/v1"));
    doc.insert(s("kind"), s("Workflow"));
    doc.insert(s("metadata"), Value::Mapping(metadata));
    doc.insert(s("spec"), Value::Mapping(spec));
    let body = serde_yaml::to_string(&Value::Mapping(doc)).map_err(|e| PlanError::Shipped {
        file: HOP_FILE,
        message: e.to_string(),
    })?;
    let command = if inputs.command.is_empty() {
        String::new()
    } else {
        format!(" (`{}`)", inputs.command)
    };
    Ok(format!(
        "# Written by `kpilot plan upgrade`{command}\n# from workflows/upgrade/hop.yaml, one hop per minor version. Give --param controlPlane=...\n# and --param nodeUpgrade=... your cluster's commands to run it: their defaults change\n# nothing and fail.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(from: &str, to: &str) -> Vec<String> {
        hops(from, to)
            .expect("hops")
            .into_iter()
            .map(|h| format!("{}->{}", h.from, h.to))
            .collect()
    }

    #[test]
    fn one_minor_per_hop_ending_at_the_target() {
        assert_eq!(
            targets("1.12", "1.16"),
            ["1.12->1.13", "1.13->1.14", "1.14->1.15", "1.15->1.16"]
        );
        assert_eq!(targets("v1.34.4", "v1.35.4"), ["1.34.4->1.35.4"]);
        assert_eq!(
            targets("1.12.3", "1.14.2"),
            ["1.12.3->1.13", "1.13->1.14.2"]
        );
        assert_eq!(targets("v1.28.3-eks-1", "1.29"), ["1.28.3->1.29"]);
    }

    #[test]
    fn addons_come_from_the_table() {
        let h = hops("1.12", "1.16").expect("hops");
        assert_eq!(h[0].addons.coredns.as_deref(), Some("1.2.6"));
        assert_eq!(h[3].addons.etcd.as_deref(), Some("3.3.15"));
        let h = hops("1.34", "1.35").expect("hops");
        assert_eq!(h[0].addons.coredns.as_deref(), Some("v1.13.1"));
        assert_eq!(h[0].addons.etcd.as_deref(), Some("3.6.6"));
        assert_eq!(h[0].addons.pause.as_deref(), Some("3.10.1"));
        let table = addon_table().expect("table");
        for minor in 12..=36 {
            assert!(table.contains_key(&(1, minor)), "1.{minor} has a row");
        }
    }

    #[test]
    fn backwards_same_minor_and_nonsense_are_refused() {
        for (from, to, want) in [
            ("1.16", "1.12", "not downgrades"),
            ("1.16.3", "1.16.1", "not downgrades"),
            ("1.16.1", "1.16.3", "same minor version"),
            ("1.16", "1.16", "same minor version"),
            ("1.16", "2.0", "different major"),
            (
                "latest",
                "1.16",
                "--from \"latest\" is not a Kubernetes version",
            ),
            ("1.16", "1.17.x", "--to \"1.17.x\""),
        ] {
            let e = hops(from, to).expect_err(to).to_string();
            assert!(e.contains(want), "{from} -> {to}: {e}");
        }
    }

    #[test]
    fn the_template_fills_every_placeholder() {
        let hop = &hops("1.12", "1.13").expect("hops")[0];
        let text = fill(HOP_TEMPLATE, hop).expect("filled");
        assert!(!text.contains("{{hop."), "{text}");
        assert!(text.contains("{{item.name}}"), "message templates stay");
        let e = fill("{{hop.nope}}", hop).expect_err("unknown").to_string();
        assert!(e.contains("hop.id, hop.to"), "{e}");
    }
}
