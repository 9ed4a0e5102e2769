//! What changed between two snapshots of a run (`kpilot diff`).
//!
//! A snapshot is the output of a `snapshot` step: plain data, so this module
//! knows no cluster. [`pick`] chooses the two snapshots among a run's steps,
//! [`diff`] compares them, and [`Diff::text`] (or its JSON) says what moved.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

/// Why two snapshots cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The run has no step of that id.
    #[error("run {run} has no step `{step}`; its snapshot steps are: {}", names(.snapshots))]
    NoSuchStep {
        /// The run.
        run: String,
        /// The step asked for.
        step: String,
        /// The run's snapshot steps.
        snapshots: Vec<String>,
    },
    /// The step is not a `snapshot` step.
    #[error("step `{step}` of run {run} is not a snapshot step (it is {} `{kind}` step); its snapshot steps are: {}", article(.kind), names(.snapshots))]
    NotASnapshot {
        /// The run.
        run: String,
        /// The step.
        step: String,
        /// Its body's kind.
        kind: String,
        /// The run's snapshot steps.
        snapshots: Vec<String>,
    },
    /// The snapshot step has not succeeded, so it has no snapshot.
    #[error("snapshot step `{step}` of run {run} has no snapshot: it is {state}")]
    NotTaken {
        /// The run.
        run: String,
        /// The step.
        step: String,
        /// Its state.
        state: String,
    },
    /// Fewer than two snapshots to compare.
    #[error("run {run} has {count} snapshot(s) taken ({}); a diff needs two: add `snapshot: {{}}` steps before and after the change, or name two with `kpilot diff {run} STEP_A STEP_B`", names(.taken))]
    TooFew {
        /// The run.
        run: String,
        /// How many snapshot steps succeeded.
        count: usize,
        /// Their ids.
        taken: Vec<String>,
    },
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn names(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.join(", ")
    }
}

/// A step of a run, as much as picking snapshots needs.
#[derive(Debug, Clone)]
pub struct StepSeen {
    /// Its id.
    pub id: String,
    /// Its body's kind (`snapshot`, `check`, ...).
    pub kind: String,
    /// Its state (`succeeded`, `failed`, ...).
    pub state: String,
    /// Its output, when it succeeded.
    pub output: Option<Value>,
}

/// A snapshot and the step that took it.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The step.
    pub step: String,
    /// The snapshot.
    pub snapshot: Value,
}

/// The two snapshots to compare: `a` and `b` when named, else the first and
/// the last snapshot steps (in `steps`' order) that succeeded.
pub fn pick(
    run: &str,
    steps: &[StepSeen],
    names: Option<(&str, &str)>,
) -> Result<(Taken, Taken), DiffError> {
    let snapshots: Vec<String> = steps
        .iter()
        .filter(|s| s.kind == "snapshot")
        .map(|s| s.id.clone())
        .collect();
    let taken = |s: &StepSeen| -> Option<Taken> {
        let output = s.output.as_ref()?;
        (s.kind == "snapshot" && s.state == "succeeded").then(|| Taken {
            step: s.id.clone(),
            snapshot: output.clone(),
        })
    };
    match names {
        Some((a, b)) => {
            let one = |id: &str| -> Result<Taken, DiffError> {
                let step =
                    steps
                        .iter()
                        .find(|s| s.id == id)
                        .ok_or_else(|| DiffError::NoSuchStep {
                            run: run.to_owned(),
                            step: id.to_owned(),
                            snapshots: snapshots.clone(),
                        })?;
                if step.kind != "snapshot" {
                    return Err(DiffError::NotASnapshot {
                        run: run.to_owned(),
                        step: id.to_owned(),
                        kind: step.kind.clone(),
                        snapshots: snapshots.clone(),
                    });
                }
                taken(step).ok_or_else(|| DiffError::NotTaken {
                    run: run.to_owned(),
                    step: id.to_owned(),
                    state: step.state.clone(),
                })
            };
            Ok((one(a)?, one(b)?))
        }
        None => {
            let all: Vec<Taken> = steps.iter().filter_map(taken).collect();
            match (all.first(), all.last()) {
                (Some(first), Some(last)) if all.len() >= 2 => Ok((first.clone(), last.clone())),
                _ => Err(DiffError::TooFew {
                    run: run.to_owned(),
                    count: all.len(),
                    taken: all.iter().map(|t| t.step.clone()).collect(),
                }),
            }
        }
    }
}

/// A value before and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moved<T> {
    /// In the first snapshot.
    pub before: T,
    /// In the second.
    pub after: T,
}

/// Something of a named object that changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changed<T> {
    /// The object: a node's name, `namespace/name` of a workload or pod.
    pub name: String,
    /// In the first snapshot.
    pub before: T,
    /// In the second.
    pub after: T,
}

/// A workload's replicas and how many are available.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Availability {
    /// Wanted (a Deployment's replicas, a DaemonSet's desired pods).
    pub wanted: i64,
    /// Available.
    pub available: i64,
}

/// What changed between two snapshots; empty lists are what did not.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    /// When each snapshot was taken.
    pub taken_at: Moved<String>,
    /// The step ids compared: `before` → `after`.
    pub steps: Moved<String>,
    /// The API server's version, when it moved.
    pub version: Option<Moved<String>>,
    /// Ready nodes, when the count moved.
    pub ready_nodes: Option<Moved<i64>>,
    /// Nodes in the first snapshot and not the second.
    pub nodes_lost: Vec<String>,
    /// Nodes in the second snapshot and not the first.
    pub nodes_added: Vec<String>,
    /// Nodes whose readiness changed.
    pub readiness: Vec<Changed<bool>>,
    /// Nodes whose kubelet version changed.
    pub kubelet: Vec<Changed<String>>,
    /// Nodes cordoned (`after: true`) or uncordoned (`after: false`).
    pub cordoned: Vec<Changed<bool>>,
    /// Addons whose version changed, or that came or went (`null`).
    pub addons: Vec<Changed<Option<String>>>,
    /// Deployments with fewer available replicas than before.
    pub deployments_dropped: Vec<Changed<Availability>>,
    /// Deployments gone.
    pub deployments_lost: Vec<String>,
    /// DaemonSets with fewer available pods than before.
    pub daemon_sets_dropped: Vec<Changed<Availability>>,
    /// DaemonSets gone.
    pub daemon_sets_lost: Vec<String>,
    /// Pods whose restart count went up.
    pub pods_restarted: Vec<Changed<i64>>,
    /// API versions served before and not any more.
    pub apis_removed: Vec<String>,
    /// API versions served now and not before.
    pub apis_added: Vec<String>,
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn by_name(list: &Value, key: impl Fn(&Value) -> String) -> BTreeMap<String, &Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|item| (key(item), item))
        .collect()
}

fn qualified(item: &Value) -> String {
    format!("{}/{}", text(&item["namespace"]), text(&item["name"]))
}

/// Workloads (`list`, each with `wanted` under `want`) whose availability dropped, and those gone.
fn workloads(
    before: &Value,
    after: &Value,
    want: &str,
) -> (Vec<Changed<Availability>>, Vec<String>) {
    let a = by_name(&before["items"], qualified);
    let b = by_name(&after["items"], qualified);
    let avail = |v: &Value| Availability {
        wanted: v[want].as_i64().unwrap_or(0),
        available: v["available"].as_i64().unwrap_or(0),
    };
    let mut dropped = Vec::new();
    let mut lost = Vec::new();
    for (name, old) in &a {
        match b.get(name) {
            None => lost.push(name.clone()),
            Some(new) => {
                let (old, new) = (avail(old), avail(new));
                if new.available < old.available {
                    dropped.push(Changed {
                        name: name.clone(),
                        before: old,
                        after: new,
                    });
                }
            }
        }
    }
    (dropped, lost)
}

/// Compares snapshot `a` (before) with `b` (after).
pub fn diff(a: &Taken, b: &Taken) -> Diff {
    let (x, y) = (&a.snapshot, &b.snapshot);
    let version = {
        let (v1, v2) = (
            text(&x["version"]["gitVersion"]),
            text(&y["version"]["gitVersion"]),
        );
        (v1 != v2).then_some(Moved {
            before: v1,
            after: v2,
        })
    };
    let ready_nodes = {
        let (r1, r2) = (
            x["nodes"]["ready"].as_i64().unwrap_or(0),
            y["nodes"]["ready"].as_i64().unwrap_or(0),
        );
        (r1 != r2).then_some(Moved {
            before: r1,
            after: r2,
        })
    };
    let n1 = by_name(&x["nodes"]["items"], |n| text(&n["name"]));
    let n2 = by_name(&y["nodes"]["items"], |n| text(&n["name"]));
    let nodes_lost = n1
        .keys()
        .filter(|k| !n2.contains_key(*k))
        .cloned()
        .collect();
    let nodes_added = n2
        .keys()
        .filter(|k| !n1.contains_key(*k))
        .cloned()
        .collect();
    let mut readiness = Vec::new();
    let mut kubelet = Vec::new();
    let mut cordoned = Vec::new();
    for (name, old) in &n1 {
        let Some(new) = n2.get(name) else { continue };
        let flag = |v: &Value, k: &str| v[k].as_bool().unwrap_or(false);
        if flag(old, "ready") != flag(new, "ready") {
            readiness.push(Changed {
                name: name.clone(),
                before: flag(old, "ready"),
                after: flag(new, "ready"),
            });
        }
        if old["kubeletVersion"] != new["kubeletVersion"] {
            kubelet.push(Changed {
                name: name.clone(),
                before: text(&old["kubeletVersion"]),
                after: text(&new["kubeletVersion"]),
            });
        }
        if flag(old, "unschedulable") != flag(new, "unschedulable") {
            cordoned.push(Changed {
                name: name.clone(),
                before: flag(old, "unschedulable"),
                after: flag(new, "unschedulable"),
            });
        }
    }
    let empty = serde_json::Map::new();
    let a1 = x["addons"].as_object().unwrap_or(&empty);
    let a2 = y["addons"].as_object().unwrap_or(&empty);
    let names: BTreeSet<&String> = a1.keys().chain(a2.keys()).collect();
    let version_of = |m: &serde_json::Map<String, Value>, n: &str| {
        m.get(n).map(|a| match &a["version"] {
            Value::Null => String::new(),
            v => text(v),
        })
    };
    let addons = names
        .into_iter()
        .filter_map(|n| {
            let (v1, v2) = (version_of(a1, n), version_of(a2, n));
            (v1 != v2).then(|| Changed {
                name: n.clone(),
                before: v1,
                after: v2,
            })
        })
        .collect();
    let (deployments_dropped, deployments_lost) = workloads(
        &x["workloads"]["deployments"],
        &y["workloads"]["deployments"],
        "replicas",
    );
    let (daemon_sets_dropped, daemon_sets_lost) = workloads(
        &x["workloads"]["daemonSets"],
        &y["workloads"]["daemonSets"],
        "desired",
    );
    let r1 = x["pods"]["restarts"].as_object().unwrap_or(&empty);
    let pods_restarted = y["pods"]["restarts"]
        .as_object()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|(pod, n)| {
            let after = n.as_i64().unwrap_or(0);
            let before = r1.get(pod).and_then(Value::as_i64).unwrap_or(0);
            (after > before).then(|| Changed {
                name: pod.clone(),
                before,
                after,
            })
        })
        .collect();
    let apis = |v: &Value| -> BTreeSet<String> {
        v["apis"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect()
    };
    let (p1, p2) = (apis(x), apis(y));
    Diff {
        taken_at: Moved {
            before: text(&x["takenAt"]),
            after: text(&y["takenAt"]),
        },
        steps: Moved {
            before: a.step.clone(),
            after: b.step.clone(),
        },
        version,
        ready_nodes,
        nodes_lost,
        nodes_added,
        readiness,
        kubelet,
        cordoned,
        addons,
        deployments_dropped,
        deployments_lost,
        daemon_sets_dropped,
        daemon_sets_lost,
        pods_restarted,
        apis_removed: p1.difference(&p2).cloned().collect(),
        apis_added: p2.difference(&p1).cloned().collect(),
    }
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.version.is_none()
            && self.ready_nodes.is_none()
            && self.nodes_lost.is_empty()
            && self.nodes_added.is_empty()
            && self.readiness.is_empty()
            && self.kubelet.is_empty()
            && self.cordoned.is_empty()
            && self.addons.is_empty()
            && self.deployments_dropped.is_empty()
            && self.deployments_lost.is_empty()
            && self.daemon_sets_dropped.is_empty()
            && self.daemon_sets_lost.is_empty()
            && self.pods_restarted.is_empty()
            && self.apis_removed.is_empty()
            && self.apis_added.is_empty()
    }

    /// The diff for a person: one line per change, grouped.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} ({}) → {} ({})",
            self.steps.before, self.taken_at.before, self.steps.after, self.taken_at.after
        );
        if self.is_empty() {
            out.push_str("no changes\n");
            return out;
        }
        let ready = |b: bool| if b { "Ready" } else { "NotReady" };
        let opt = |v: &Option<String>| match v {
            None => "absent".to_owned(),
            Some(s) if s.is_empty() => "no version".to_owned(),
            Some(s) => s.clone(),
        };
        let avail = |a: &Availability| format!("{}/{} available", a.available, a.wanted);
        if let Some(v) = &self.version {
            let _ = writeln!(out, "version: {} → {}", v.before, v.after);
        }
        if let Some(r) = &self.ready_nodes {
            let _ = writeln!(out, "ready nodes: {} → {}", r.before, r.after);
        }
        for n in &self.nodes_lost {
            let _ = writeln!(out, "node lost: {n}");
        }
        for n in &self.nodes_added {
            let _ = writeln!(out, "node added: {n}");
        }
        for c in &self.readiness {
            let _ = writeln!(
                out,
                "node {}: {} → {}",
                c.name,
                ready(c.before),
                ready(c.after)
            );
        }
        for c in &self.kubelet {
            let _ = writeln!(out, "node {}: kubelet {} → {}", c.name, c.before, c.after);
        }
        for c in &self.cordoned {
            let _ = writeln!(
                out,
                "node {}: {}",
                c.name,
                if c.after { "cordoned" } else { "uncordoned" }
            );
        }
        for c in &self.addons {
            let _ = writeln!(
                out,
                "addon {}: {} → {}",
                c.name,
                opt(&c.before),
                opt(&c.after)
            );
        }
        for c in &self.deployments_dropped {
            let _ = writeln!(
                out,
                "deployment {}: {} → {}",
                c.name,
                avail(&c.before),
                avail(&c.after)
            );
        }
        for n in &self.deployments_lost {
            let _ = writeln!(out, "deployment lost: {n}");
        }
        for c in &self.daemon_sets_dropped {
            let _ = writeln!(
                out,
                "daemon set {}: {} → {}",
                c.name,
                avail(&c.before),
                avail(&c.after)
            );
        }
        for n in &self.daemon_sets_lost {
            let _ = writeln!(out, "daemon set lost: {n}");
        }
        for c in &self.pods_restarted {
            let _ = writeln!(
                out,
                "pod {}: restarted {} time(s) ({} → {})",
                c.name,
                c.after - c.before,
                c.before,
                c.after
            );
        }
        for a in &self.apis_removed {
            let _ = writeln!(out, "API no longer served: {a}");
        }
        for a in &self.apis_added {
            let _ = writeln!(out, "API newly served: {a}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn snap(
        version: &str,
        nodes: Value,
        deployments: Value,
        restarts: Value,
        apis: Value,
    ) -> Value {
        let ready = nodes
            .as_array()
            .map_or(0, |n| n.iter().filter(|n| n["ready"] == true).count());
        json!({
            "kind": "snapshot",
            "takenAt": "2026-01-01T00:00:00Z",
            "version": {"gitVersion": version},
            "nodes": {"total": nodes.as_array().map_or(0, Vec::len), "ready": ready, "items": nodes},
            "addons": {"coredns": {"version": "v1.11.3"}},
            "workloads": {"deployments": {"items": deployments}, "daemonSets": {"items": []}},
            "pods": {"total": 3, "restarts": restarts},
            "apis": apis,
        })
    }

    fn node(name: &str, ready: bool, kubelet: &str, cordoned: bool) -> Value {
        json!({"name": name, "ready": ready, "kubeletVersion": kubelet, "unschedulable": cordoned})
    }

    #[test]
    fn names_every_kind_of_change() {
        let a = Taken {
            step: "before".into(),
            snapshot: snap(
                "v1.34.4",
                json!([
                    node("a", true, "v1.34.4", false),
                    node("b", true, "v1.34.4", false),
                    node("c", true, "v1.34.4", false),
                ]),
                json!([{"namespace": "shop", "name": "web", "replicas": 3, "available": 3}]),
                json!({"shop/web-1": 1}),
                json!(["v1", "batch/v1beta1", "apps/v1"]),
            ),
        };
        let b = Taken {
            step: "after".into(),
            snapshot: snap(
                "v1.35.4",
                json!([
                    node("a", false, "v1.34.4", false),
                    node("b", true, "v1.35.4", true),
                    node("d", true, "v1.35.4", false),
                ]),
                json!([{"namespace": "shop", "name": "web", "replicas": 3, "available": 1}]),
                json!({"shop/web-1": 3, "shop/web-2": 1}),
                json!(["v1", "apps/v1", "resource.k8s.io/v1"]),
            ),
        };
        let d = diff(&a, &b);
        assert_eq!(
            d.version,
            Some(Moved {
                before: "v1.34.4".into(),
                after: "v1.35.4".into()
            })
        );
        assert_eq!(d.nodes_lost, vec!["c"]);
        assert_eq!(d.nodes_added, vec!["d"]);
        assert_eq!(d.readiness.len(), 1);
        assert_eq!(d.kubelet[0].name, "b");
        assert!(d.cordoned[0].after);
        assert_eq!(d.deployments_dropped[0].after.available, 1);
        assert_eq!(d.pods_restarted.len(), 2);
        assert_eq!(d.apis_removed, vec!["batch/v1beta1"]);
        assert_eq!(d.apis_added, vec!["resource.k8s.io/v1"]);
        let text = d.text();
        for line in [
            "version: v1.34.4 → v1.35.4",
            "node lost: c",
            "node a: Ready → NotReady",
            "node b: kubelet v1.34.4 → v1.35.4",
            "node b: cordoned",
            "deployment shop/web: 3/3 available → 1/3 available",
            "pod shop/web-1: restarted 2 time(s) (1 → 3)",
            "API no longer served: batch/v1beta1",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        assert!(diff(&a, &a).is_empty());
        assert!(diff(&a, &a).text().contains("no changes"));
    }

    #[test]
    fn picks_the_first_and_last_or_says_why_not() {
        let step = |id: &str, kind: &str, state: &str| StepSeen {
            id: id.into(),
            kind: kind.into(),
            state: state.into(),
            output: (state == "succeeded").then(|| json!({"kind": "snapshot"})),
        };
        let steps = vec![
            step("before", "snapshot", "succeeded"),
            step("upgrade", "command", "succeeded"),
            step("mid", "snapshot", "succeeded"),
            step("after", "snapshot", "succeeded"),
            step("late", "snapshot", "skipped"),
        ];
        let (a, b) = pick("r", &steps, None).expect("two");
        assert_eq!((a.step.as_str(), b.step.as_str()), ("before", "after"));
        let e = pick("r", &steps, Some(("before", "upgrade"))).expect_err("not one");
        assert!(
            e.to_string()
                .contains("not a snapshot step (it is a `command` step)"),
            "{e}"
        );
        let e = pick("r", &steps, Some(("before", "late"))).expect_err("not taken");
        assert!(e.to_string().contains("skipped"), "{e}");
        let e = pick("r", &steps[..2], None).expect_err("one");
        assert!(e.to_string().contains("has 1 snapshot(s)"), "{e}");
    }
}
