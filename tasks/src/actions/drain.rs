//! `drain`: kubectl drain's ordered filter chain, evictions through the
//! Eviction API (`policy/v1`) retried while a PodDisruptionBudget refuses
//! them, and the wait until the evicted pods are gone.
//!
//! The whole plan (which pods go, which stay and why, which block the drain)
//! is made before the first eviction, so a drain that cannot finish evicts
//! nothing. Each eviction names the pod's UID as a precondition, and pods
//! already being deleted are waited for, never evicted again: a drain
//! resumed after kill -9 evicts no pod twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{json, Value};

use super::{api_code, api_message};
use crate::data::Cluster;

/// kubectl drain's choices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainOptions {
    /// Evict pods with emptyDir volumes (their data is lost).
    pub delete_empty_dir_data: bool,
    /// Evict pods that no controller will recreate.
    pub force: bool,
    /// The grace period given to each pod, instead of its own.
    pub grace_period: Option<Duration>,
    /// Only pods this label selector matches.
    pub pod_selector: Option<String>,
}

/// The annotation the kubelet puts on the API's copy of a static pod.
const MIRROR: &str = "kubernetes.io/config.mirror";

/// A pod, as the drain names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID: the pod this drain means, not a later one of the same name.
    pub uid: String,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the drain does with the pods of its nodes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pods to evict.
    pub evict: Vec<PodRef>,
    /// Pods already being deleted (an earlier eviction): waited for only.
    pub wait: Vec<PodRef>,
    /// Pods left where they are, and why.
    pub skipped: Vec<(PodRef, &'static str)>,
    /// Pods that stop the drain, and what lets it evict them.
    pub blocked: Vec<(PodRef, &'static str)>,
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// The filter chain, in kubectl's order; the first filter that keeps a pod
/// decides. Pods that ran to completion may always go.
pub fn plan(pods: &[Pod], options: &DrainOptions) -> Plan {
    let mut plan = Plan::default();
    for pod in pods {
        let r = pod_ref(pod);
        if pod.metadata.deletion_timestamp.is_some() {
            plan.wait.push(r);
            continue;
        }
        let controller = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        if controller.is_some_and(|c| c.kind == "DaemonSet") {
            plan.skipped.push((r, "DaemonSet pod"));
            continue;
        }
        if pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(MIRROR))
        {
            plan.skipped
                .push((r, "mirror pod (a static pod the kubelet runs)"));
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let finished = matches!(phase, Some("Succeeded" | "Failed"));
        if !finished && !options.delete_empty_dir_data && has_empty_dir(pod) {
            plan.blocked.push((
                r,
                "it has emptyDir data, which eviction deletes (set `deleteEmptyDirData: true` to evict it)",
            ));
            continue;
        }
        if !finished && !options.force && controller.is_none() {
            plan.blocked.push((
                r,
                "no controller recreates it (set `force: true` to evict it anyway)",
            ));
            continue;
        }
        plan.evict.push(r);
    }
    plan
}

fn has_empty_dir(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()))
}

/// Why a plan cannot be carried out: every blocked pod, grouped by reason.
pub fn blocked_message(blocked: &[(PodRef, &'static str)]) -> String {
    let mut by_reason: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (pod, reason) in blocked {
        by_reason.entry(reason).or_default().push(pod.to_string());
    }
    let parts: Vec<String> = by_reason
        .into_iter()
        .map(|(reason, pods)| format!("cannot evict {}: {reason}", pods.join(", ")))
        .collect();
    format!(
        "the drain evicted nothing: {} pod(s) would stay; {}",
        blocked.len(),
        parts.join("; ")
    )
}

/// The Eviction (`policy/v1`) of `pod`, with its UID as a precondition so
/// that a later pod of the same name is never evicted by mistake.
pub fn eviction(pod: &PodRef, grace_period: Option<Duration>) -> Value {
    let mut delete_options = json!({"preconditions": {"uid": pod.uid}});
    if let Some(grace) = grace_period {
        delete_options["gracePeriodSeconds"] = json!(grace.as_secs());
    }
    json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "deleteOptions": delete_options,
    })
}

/// Whether `selector` selects `labels` (matchLabels and matchExpressions).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// What a drain did, as the step's output.
#[derive(Debug, Default)]
pub struct Report {
    /// Pods it evicted (this attempt and earlier ones of the run).
    pub evicted: Vec<String>,
    /// Pods it left, and why.
    pub skipped: Vec<(String, &'static str)>,
    /// Pods already being deleted that it waited for.
    pub waited_for: Vec<String>,
}

impl Report {
    /// The step's output.
    pub fn to_json(&self) -> Value {
        json!({
            "evicted": self.evicted,
            "skipped": self.skipped.iter().map(|(p, r)| json!({"pod": p, "reason": r})).collect::<Vec<_>>(),
            "waitedFor": self.waited_for,
        })
    }
}

/// The ledger prefix of the pods a run evicted (`evicted/NS/NAME`).
pub const EVICTED: &str = "evicted/";

/// How long the drain waits between rounds of refused evictions, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Drains `nodes`: plans every pod first, then evicts, then waits until the
/// evicted pods are gone, all before `deadline`. The error says which pods
/// block, or which PodDisruptionBudget refused which eviction.
pub async fn drain(
    cluster: &Cluster,
    ledger: &kpilot_engine::store::Ledger,
    step: &str,
    nodes: &[String],
    options: &DrainOptions,
    deadline: Instant,
) -> (Report, Result<(), String>) {
    let mut report = Report::default();
    let result = drain_into(cluster, ledger, step, nodes, options, deadline, &mut report).await;
    (report, result)
}

async fn drain_into(
    cluster: &Cluster,
    ledger: &kpilot_engine::store::Ledger,
    step: &str,
    nodes: &[String],
    options: &DrainOptions,
    deadline: Instant,
    report: &mut Report,
) -> Result<(), String> {
    let client = cluster.client().await.map_err(|e| e.to_string())?;
    let all: Api<Pod> = Api::all(client.clone());
    let mut pods = Vec::new();
    for node in nodes {
        let node_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let n = node_api
            .get(node)
            .await
            .map_err(|e| format!("reading node {node}: {}", api_message(&e)))?;
        let cordoned = n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !cordoned {
            return Err(format!(
                "node {node} is schedulable: pods evicted from it could be scheduled on it again; cordon it first (a `cordon` step before this one)"
            ));
        }
        let mut lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        if let Some(selector) = &options.pod_selector {
            lp = lp.labels(selector);
        }
        let list = all
            .list(&lp)
            .await
            .map_err(|e| format!("listing the pods on node {node}: {}", api_message(&e)))?;
        pods.extend(list.items);
    }
    let plan = plan(&pods, options);
    report.skipped = plan
        .skipped
        .iter()
        .map(|(p, r)| (p.to_string(), *r))
        .collect();
    report.waited_for = plan.wait.iter().map(ToString::to_string).collect();
    // Pods evicted by an earlier attempt of this run (before a kill) count too.
    let node_set: std::collections::BTreeSet<&str> = nodes.iter().map(String::as_str).collect();
    let earlier: Vec<String> = ledger
        .entries(EVICTED)
        .into_iter()
        .filter(|(_, v)| v["node"].as_str().is_some_and(|n| node_set.contains(n)))
        .map(|(k, _)| k[EVICTED.len()..].to_owned())
        .collect();
    report.evicted = earlier;
    if !plan.blocked.is_empty() {
        return Err(blocked_message(&plan.blocked));
    }
    let node_of: BTreeMap<PodRef, String> = pods
        .iter()
        .map(|p| {
            (
                pod_ref(p),
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();

    let mut pending = plan.evict.clone();
    let mut evicted: Vec<PodRef> = Vec::new();
    let mut refused_since: BTreeMap<PodRef, Instant> = BTreeMap::new();
    let mut blockers: BTreeMap<PodRef, String> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut next = Vec::new();
        for pod in pending {
            let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
            let body = eviction(&pod, options.grace_period)
                .to_string()
                .into_bytes();
            let result: Result<Value, kube::Error> = api
                .create_subresource("eviction", &pod.name, &PostParams::default(), body)
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(pod = %pod, "evicted");
                    let entry = format!("{EVICTED}{pod}");
                    let node = node_of.get(&pod).cloned().unwrap_or_default();
                    ledger
                        .record(&entry, &json!({"uid": pod.uid, "node": node, "step": step}))
                        .await?;
                    let name = pod.to_string();
                    if !report.evicted.contains(&name) {
                        report.evicted.push(name);
                    }
                    evicted.push(pod);
                }
                // Gone already, or a new pod under that name (UID precondition).
                Err(e) if api_code(&e) == Some(404) || api_code(&e) == Some(409) => {}
                Err(e) if api_code(&e) == Some(429) => {
                    let why = pdb_blocking(&client, &pod).await;
                    if !refused_since.contains_key(&pod) {
                        refused_since.insert(pod.clone(), Instant::now());
                        tracing::warn!(pod = %pod, "eviction refused by {why}; trying again until the step's deadline");
                    }
                    blockers.insert(pod.clone(), why);
                    next.push(pod);
                }
                Err(e) => failures.push(format!("pod {pod}: eviction failed: {}", api_message(&e))),
            }
        }
        if next.is_empty() {
            break;
        }
        if Instant::now() + backoff >= deadline {
            let now = Instant::now();
            let mut message = refused_message(&next, &blockers, |p| {
                now.duration_since(refused_since.get(p).copied().unwrap_or(now))
            });
            for failure in failures {
                message.push_str("; ");
                message.push_str(&failure);
            }
            return Err(message);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        pending = next;
    }
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }

    // Wait until every evicted pod, and every pod already being deleted, is
    // gone: NotFound, or a new pod (another UID) under its name.
    let mut waiting: Vec<PodRef> = evicted.into_iter().chain(plan.wait).collect();
    let mut pause = Duration::from_millis(200);
    loop {
        let mut still = Vec::new();
        for pod in waiting {
            let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
            match api.get_opt(&pod.name).await {
                Ok(Some(p)) if p.metadata.uid.as_deref() == Some(pod.uid.as_str()) => {
                    still.push(pod)
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "waiting for pod {pod} to be gone: {}",
                        api_message(&e)
                    ))
                }
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() + pause >= deadline {
            let names: Vec<String> = still.iter().map(ToString::to_string).collect();
            return Err(format!(
                "evicted pods still there at the step's deadline: {} (their grace period or a finalizer keeps them)",
                names.join(", ")
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
        waiting = still;
    }
}

/// The PodDisruptionBudgets in the pod's namespace that select it, as
/// `PodDisruptionBudget ns/name (N disruptions allowed)`.
async fn pdb_blocking(client: &kube::Client, pod: &PodRef) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let labels = match pods.get_opt(&pod.name).await {
        Ok(Some(p)) => p.metadata.labels.unwrap_or_default(),
        _ => BTreeMap::new(),
    };
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &pod.namespace);
    let Ok(list) = pdbs.list(&ListParams::default()).await else {
        return "a PodDisruptionBudget".into();
    };
    let names: Vec<String> = list
        .items
        .iter()
        .filter(|b| {
            b.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|s| selects(s, &labels))
        })
        .map(|b| {
            let allowed = b
                .status
                .as_ref()
                .map(|s| s.disruptions_allowed)
                .unwrap_or(0);
            format!(
                "PodDisruptionBudget {}/{} ({allowed} disruptions allowed)",
                pod.namespace,
                b.metadata.name.as_deref().unwrap_or("?")
            )
        })
        .collect();
    if names.is_empty() {
        "the API server (429, no PodDisruptionBudget selects the pod)".into()
    } else {
        names.join(" and ")
    }
}

/// Why the drain gave up: the pods still refused, grouped by what refused
/// them, each with how long it was refused, and what to do.
fn refused_message(
    pods: &[PodRef],
    blockers: &BTreeMap<PodRef, String>,
    refused_for: impl Fn(&PodRef) -> Duration,
) -> String {
    let mut by_blocker: BTreeMap<&str, Vec<&PodRef>> = BTreeMap::new();
    for pod in pods {
        let why = blockers
            .get(pod)
            .map(String::as_str)
            .unwrap_or("the API server");
        by_blocker.entry(why).or_default().push(pod);
    }
    let parts: Vec<String> = by_blocker
        .into_iter()
        .map(|(why, pods)| {
            let longest = pods
                .iter()
                .map(|p| refused_for(p))
                .max()
                .unwrap_or_default();
            let secs = Duration::from_secs(longest.as_secs().max(1));
            let names: Vec<String> = pods.iter().map(ToString::to_string).collect();
            let which = if names.len() == 1 { "pod" } else { "pods" };
            format!(
                "{which} {}: eviction refused by {why} for {}",
                names.join(", "),
                humantime::format_duration(secs)
            )
        })
        .collect();
    format!(
        "{}; relax the PodDisruptionBudget (or let the workload gain ready replicas), then run the step again",
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, extra: Value) -> Pod {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running"},
        });
        merge(&mut p, extra);
        serde_json::from_value(p).expect("pod")
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn owned_by(kind: &str) -> Value {
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": "o", "uid": "u", "controller": true}]}})
    }

    fn names(v: &[PodRef]) -> Vec<&str> {
        v.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn the_filter_chain_keeps_kubectls_order_and_rules() {
        let pods = vec![
            pod("rs", owned_by("ReplicaSet")),
            pod("ds", owned_by("DaemonSet")),
            pod(
                "mirror",
                json!({"metadata": {"annotations": {MIRROR: "x"}}}),
            ),
            pod("bare", json!({})),
            pod("done", json!({"status": {"phase": "Succeeded"}})),
            pod("scratch", {
                let mut v = owned_by("ReplicaSet");
                merge(
                    &mut v,
                    json!({"spec": {"volumes": [{"name": "s", "emptyDir": {}}]}}),
                );
                v
            }),
            pod(
                "going",
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
        ];
        let p = plan(&pods, &DrainOptions::default());
        assert_eq!(names(&p.evict), ["rs", "done"]);
        assert_eq!(names(&p.wait), ["going"]);
        let skipped: Vec<&str> = p.skipped.iter().map(|(p, _)| p.name.as_str()).collect();
        assert_eq!(skipped, ["ds", "mirror"]);
        let blocked: Vec<&str> = p.blocked.iter().map(|(p, _)| p.name.as_str()).collect();
        assert_eq!(blocked, ["bare", "scratch"]);
        let message = blocked_message(&p.blocked);
        assert!(
            message.contains("ns/bare") && message.contains("`force: true`"),
            "{message}"
        );
        assert!(
            message.contains("ns/scratch") && message.contains("`deleteEmptyDirData: true`"),
            "{message}"
        );

        let all = plan(
            &pods,
            &DrainOptions {
                delete_empty_dir_data: true,
                force: true,
                ..DrainOptions::default()
            },
        );
        assert_eq!(names(&all.evict), ["rs", "bare", "done", "scratch"]);
        assert!(all.blocked.is_empty());
    }

    #[test]
    fn an_eviction_is_policy_v1_with_the_pods_uid() {
        let p = PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u-1".into(),
        };
        assert_eq!(
            eviction(&p, Some(Duration::from_secs(30))),
            json!({
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": "p", "namespace": "ns"},
                "deleteOptions": {"preconditions": {"uid": "u-1"}, "gracePeriodSeconds": 30},
            })
        );
        assert!(eviction(&p, None)["deleteOptions"]
            .get("gracePeriodSeconds")
            .is_none());
    }

    #[test]
    fn refusals_are_grouped_by_the_pdb_that_refused() {
        let p = |n: &str| PodRef {
            namespace: "ns".into(),
            name: n.into(),
            uid: n.into(),
        };
        let x = "PodDisruptionBudget ns/x (0 disruptions allowed)".to_owned();
        let y = "PodDisruptionBudget ns/y (0 disruptions allowed)".to_owned();
        let blockers: BTreeMap<PodRef, String> =
            [(p("a"), x.clone()), (p("b"), x), (p("c"), y)].into();
        let message = refused_message(&[p("a"), p("b"), p("c")], &blockers, |_| {
            Duration::from_secs(300)
        });
        assert_eq!(
            message,
            "pods ns/a, ns/b: eviction refused by PodDisruptionBudget ns/x (0 disruptions allowed) for 5m; \
             pod ns/c: eviction refused by PodDisruptionBudget ns/y (0 disruptions allowed) for 5m; \
             relax the PodDisruptionBudget (or let the workload gain ready replicas), then run the step again"
        );
    }

    #[test]
    fn pdb_selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [("app".into(), "web".into())].into();
        let sel = |v: Value| -> LabelSelector { serde_json::from_value(v).expect("selector") };
        assert!(selects(
            &sel(json!({"matchLabels": {"app": "web"}})),
            &labels
        ));
        assert!(!selects(
            &sel(json!({"matchLabels": {"app": "db"}})),
            &labels
        ));
        assert!(selects(
            &sel(
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "x"]}]})
            ),
            &labels
        ));
        assert!(!selects(
            &sel(json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]})),
            &labels
        ));
        assert!(selects(&sel(json!({})), &labels));
    }
}
