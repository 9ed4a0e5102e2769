//! A cluster's facts at one moment, as a `snapshot` step keeps them: the
//! version, the nodes and their readiness, the addons' versions, workload
//! availability, pod restarts and the served API versions.
//!
//! Each part is read afresh through the same queries checks use
//! (`cluster.version`, `cluster.nodes`, `cluster.addons`, `cluster.apis`) and
//! cut down to what a later comparison needs, so that a snapshot of a large
//! cluster stays small enough to keep with the run.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use kpilot_engine::TaskContext;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

use super::cluster::{failure, list_all};
use super::{with_retry, ClusterQuery, DataError, Failure, Query};
use crate::data::Cluster;
use crate::params::Template;

/// At most this many pods with restarts are named; the rest are counted.
pub const RESTARTED_PODS: usize = 1000;

/// What a snapshot covers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// A label selector of the nodes; every node when unset.
    pub node_selector: Option<Template>,
    /// The namespaces of the workloads and pods; every namespace when empty.
    pub namespaces: Vec<Template>,
}

/// Reads the snapshot; each request retries an API server that does not
/// answer for at most `budget`.
pub async fn take(
    cluster: &Cluster,
    scope: &Scope,
    ctx: &TaskContext,
    budget: Duration,
) -> Result<Value, DataError> {
    let version = Query::Cluster(ClusterQuery::Version)
        .fetch(cluster, ctx, budget)
        .await?;
    let nodes = Query::Cluster(ClusterQuery::Nodes {
        label_selector: scope.node_selector.clone(),
        field_selector: None,
    })
    .fetch(cluster, ctx, budget)
    .await?;
    let addons = Query::Cluster(ClusterQuery::Addons { namespace: None })
        .fetch(cluster, ctx, budget)
        .await?;
    let apis = Query::Cluster(ClusterQuery::Apis)
        .fetch(cluster, ctx, budget)
        .await?;
    let namespaces: Vec<String> = scope
        .namespaces
        .iter()
        .map(|t| t.render(&ctx.params))
        .filter(|n| !n.is_empty())
        .collect();
    let workloads = workloads(cluster, &namespaces, budget).await?;
    let pods = pods(cluster, &namespaces, budget).await?;

    let node_items: Vec<Value> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            json!({
                "name": n["name"],
                "ready": n["ready"],
                "kubeletVersion": n["kubeletVersion"],
                "unschedulable": n["unschedulable"],
            })
        })
        .collect();
    let ready = node_items.iter().filter(|n| n["ready"] == true).count();
    let addons: serde_json::Map<String, Value> = addons
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, a)| {
            (
                name.clone(),
                json!({
                    "kind": a["kind"],
                    "version": a["version"],
                    "image": a["image"],
                    "desired": a["desired"],
                    "available": a["available"],
                }),
            )
        })
        .collect();
    let mut apis: Vec<String> = apis
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    apis.sort();
    apis.dedup();
    Ok(json!({
        "kind": "snapshot",
        "takenAt": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "version": {
            "gitVersion": version["gitVersion"],
            "major": version["major"],
            "minor": version["minor"],
            "platform": version["platform"],
        },
        "nodes": {
            "selector": scope.node_selector.as_ref().map(|t| t.render(&ctx.params)),
            "total": node_items.len(),
            "ready": ready,
            "items": node_items,
        },
        "addons": addons,
        "workloads": workloads,
        "pods": pods,
        "apis": apis,
    }))
}

/// The Deployments and DaemonSets of `namespaces` (every namespace when empty).
async fn workloads(
    cluster: &Cluster,
    namespaces: &[String],
    budget: Duration,
) -> Result<Value, DataError> {
    let name = "snapshot workloads";
    with_retry(name, budget, || async {
        let client = cluster.client().await.map_err(Failure::Permanent)?;
        let lp = ListParams::default();
        let mut deployments = Vec::new();
        let mut daemon_sets = Vec::new();
        let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        for ns in scopes {
            let api: Api<Deployment> = match ns {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            list_all(&api, &lp, |d| {
                let status = d.status.as_ref();
                deployments.push(json!({
                    "namespace": d.metadata.namespace,
                    "name": d.metadata.name,
                    "replicas": d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    "available": status.and_then(|s| s.available_replicas).unwrap_or(0),
                }));
            })
            .await
            .map_err(|e| failure(name, e))?;
            let api: Api<DaemonSet> = match ns {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            list_all(&api, &lp, |d| {
                let status = d.status.as_ref();
                daemon_sets.push(json!({
                    "namespace": d.metadata.namespace,
                    "name": d.metadata.name,
                    "desired": status.map_or(0, |s| s.desired_number_scheduled),
                    "available": status.and_then(|s| s.number_available).unwrap_or(0),
                }));
            })
            .await
            .map_err(|e| failure(name, e))?;
        }
        let summary = |items: Vec<Value>, want: &str| {
            let available = items
                .iter()
                .filter(|i| i["available"].as_i64() >= i[want].as_i64())
                .count();
            json!({"total": items.len(), "available": available, "items": items})
        };
        Ok(json!({
            "deployments": summary(deployments, "replicas"),
            "daemonSets": summary(daemon_sets, "desired"),
        }))
    })
    .await
}

/// How many pods there are in `namespaces`, and the restarts of those that
/// restarted (at most [`RESTARTED_PODS`] named).
async fn pods(
    cluster: &Cluster,
    namespaces: &[String],
    budget: Duration,
) -> Result<Value, DataError> {
    let name = "snapshot pods";
    with_retry(name, budget, || async {
        let client = cluster.client().await.map_err(Failure::Permanent)?;
        let lp = ListParams::default();
        let mut total = 0usize;
        let mut restarts: BTreeMap<String, i64> = BTreeMap::new();
        let mut omitted = 0usize;
        let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        for ns in scopes {
            let api: Api<Pod> = match ns {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            list_all(&api, &lp, |p| {
                total += 1;
                let status = p.status.as_ref();
                let count: i64 = status
                    .and_then(|s| s.container_statuses.as_ref())
                    .into_iter()
                    .flatten()
                    .chain(
                        status
                            .and_then(|s| s.init_container_statuses.as_ref())
                            .into_iter()
                            .flatten(),
                    )
                    .map(|c| i64::from(c.restart_count))
                    .sum();
                if count > 0 {
                    if restarts.len() < RESTARTED_PODS {
                        let key = format!(
                            "{}/{}",
                            p.metadata.namespace.as_deref().unwrap_or_default(),
                            p.metadata.name.as_deref().unwrap_or_default()
                        );
                        restarts.insert(key, count);
                    } else {
                        omitted += 1;
                    }
                }
            })
            .await
            .map_err(|e| failure(name, e))?;
        }
        let mut out = json!({"total": total, "restarts": restarts});
        if omitted > 0 {
            out["restartsOmitted"] = json!(omitted);
        }
        Ok(out)
    })
    .await
}
