//! Data drivers: where a check's `query` gets its data.
//!
//! - [`cluster`]: the Kubernetes API (`cluster.version`, `cluster.nodes`,
//!   `cluster.addons`, `cluster.apis`, `cluster.webhooks`, `cluster.services`,
//!   `cluster.servingCertificate`, and any resource).
//! - [`command`]: a user command that prints JSON (cloud security groups,
//!   load balancers, ...).
//! - [`apis`]: objects in API versions an upgrade removes or deprecates
//!   (`query: {removedApis: {target: "1.16", ...}}`).
//! - `node.*` ([`crate::node`]): the node the check runs on (kernel, sysctl,
//!   iptables/nft, routes, NICs, NTP, disks, conntrack, runtime); run by a
//!   per-node executor, each node's agent answers for its node.
//!
//! A query is written in YAML one of these ways:
//!
//! ```yaml
//! query: cluster.nodes                                   # a path
//! query: {cluster: nodes, labelSelector: "pool=gpu"}     # a path with options
//! query: {resource: {group: apps, version: v1, kind: Deployment, namespace: kube-system}}
//! query: {command: [./list-security-groups.sh, "{{params.vpc}}"]}
//! query: node.sysctl                                     # a node's data
//! ```
//!
//! Each query has a [`Query::key`]: the name its data is kept under in the
//! run's facts, so that every check of a run that asks the same question
//! shares one answer, and the answer stays with the run.

pub mod apis;
pub mod certificate;
pub mod cluster;
pub mod command;
pub mod snapshot;

use std::future::Future;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff as _;
use kpilot_engine::TaskContext;

use crate::params::Template;

pub use cluster::{Cluster, ClusterConfig};

/// Why a query gave no data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The API server did not answer before the query's time ran out.
    #[error("{query}: the API server did not answer after {attempts} attempt(s) over {:.1}s (retried with backoff): {last}", elapsed.as_secs_f64())]
    Unreachable {
        /// The query.
        query: String,
        /// How many requests were made.
        attempts: u32,
        /// From the first request to giving up.
        elapsed: Duration,
        /// The last request's error.
        last: String,
    },
    /// The API server answered with an error that asking again would not fix.
    #[error("{query}: {message}")]
    Api {
        /// The query.
        query: String,
        /// The server's answer.
        message: String,
    },
    /// No kubeconfig, a bad one, or no in-cluster credentials.
    #[error("cannot connect to the cluster: {0}")]
    Config(String),
    /// A command driver could not be started, failed or timed out.
    #[error("{query}: {message}")]
    Command {
        /// The query.
        query: String,
        /// What went wrong, with the end of its standard error.
        message: String,
    },
    /// The node could not answer a `node.*` query.
    #[error("{query}: {message}")]
    Node {
        /// The query.
        query: String,
        /// Why, from [`crate::node::NodeError`].
        message: String,
    },
    /// A query's own input (its target, paths or rows, as its params fill them in) is unusable.
    #[error("{query}: {message}")]
    Input {
        /// The query.
        query: String,
        /// What is wrong and what to change.
        message: String,
    },
    /// A command driver printed something that is not JSON.
    #[error("{query}: standard output is not JSON ({source}); print one JSON document")]
    NotJson {
        /// The query.
        query: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// One request's failure, as the retry loop sees it.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth asking again: no connection, a timeout, a 5xx or 429.
    Transient(String),
    /// Asking again would give the same answer.
    Permanent(DataError),
}

/// Which Kubernetes data a query reads.
#[derive(Debug, Clone)]
pub enum ClusterQuery {
    /// `/version`.
    Version,
    /// The nodes, optionally selected.
    Nodes {
        /// A label selector, like `pool=gpu,!spot`.
        label_selector: Option<Template>,
        /// A field selector, like `spec.unschedulable=false`.
        field_selector: Option<Template>,
    },
    /// DaemonSets and Deployments of a namespace, by name.
    Addons {
        /// Where the addons live; `kube-system` unless set.
        namespace: Option<Template>,
    },
    /// The group/versions the API server serves.
    Apis,
    /// Every admission webhook (validating and mutating), with its
    /// service's ready endpoints.
    Webhooks,
    /// Services, each with its ready and not-ready endpoints.
    Services {
        /// A namespace; all namespaces when unset.
        namespace: Option<Template>,
        /// A label selector.
        label_selector: Option<Template>,
    },
    /// The certificate a TLS server presents: the API server's unless
    /// `address` names another.
    ServingCertificate {
        /// `host:port` or `https://host:port`; the kubeconfig's server when unset.
        address: Option<Template>,
    },
    /// Any resource.
    Resource(ResourceQuery),
}

/// A list of any kind of object: `query: {resource: {...}}`.
#[derive(Debug, Clone)]
pub struct ResourceQuery {
    /// API group; empty (or `core`) for the core group.
    pub group: String,
    /// API version, like `v1`.
    pub version: String,
    /// Kind, like `Deployment`.
    pub kind: String,
    /// A namespace; all namespaces when unset (and for cluster-scoped kinds).
    pub namespace: Option<Template>,
    /// A label selector.
    pub label_selector: Option<Template>,
    /// A field selector.
    pub field_selector: Option<Template>,
}

/// A parsed `query`.
#[derive(Debug, Clone)]
pub enum Query {
    /// The Kubernetes API.
    Cluster(ClusterQuery),
    /// A command that prints JSON.
    Command {
        /// The program and its arguments.
        argv: Vec<Template>,
    },
    /// `node.PATH`: the node the check runs on.
    Node {
        /// The path after `node.` (`sysctl`, `kernel.release`).
        path: String,
    },
    /// Objects whose API an upgrade removes or deprecates ([`apis`]).
    RemovedApis(apis::RemovedApisQuery),
}

const QUERY_HINT: &str = "write `query: cluster.version` (or cluster.nodes, cluster.addons, cluster.apis, cluster.webhooks, cluster.services, cluster.servingCertificate), `query: {cluster: nodes, labelSelector: \"a=b\"}`, `query: {resource: {group: apps, version: v1, kind: Deployment, namespace: kube-system}}` `query: {command: [./list.sh, arg]}`, `query: {removedApis: {target: \"{{params.to}}\", cluster: \"true\"}}` or `query: node.sysctl` (a node's data: node.kernel, node.iptables, ...)";

fn string_field(
    map: &serde_yaml::Mapping,
    key: &str,
    params: &[String],
    at: &str,
) -> Result<Option<Template>, String> {
    match map.get(key) {
        None | Some(serde_yaml::Value::Null) => Ok(None),
        Some(serde_yaml::Value::String(s)) => Ok(Some(Template::parse(s, params)?)),
        Some(_) => Err(format!("`{at}.{key}` must be a string")),
    }
}

fn check_keys(map: &serde_yaml::Mapping, allowed: &[&str], at: &str) -> Result<(), String> {
    for key in map.keys() {
        let name = key.as_str().unwrap_or("");
        if !allowed.contains(&name) {
            return Err(format!(
                "unknown key {key:?} in `{at}`; it takes {}",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

impl Query {
    /// Parses the `query` of a check; `params` are the workflow's declared
    /// params, which `{{params.NAME}}` in strings may name.
    pub fn parse(value: &serde_yaml::Value, params: &[String]) -> Result<Self, String> {
        let (query, path) = Self::parse_path(value, params)?;
        if path.is_empty() {
            Ok(query)
        } else {
            Err(format!(
                "`{}` has no `.{}`; {QUERY_HINT}",
                query.name(),
                path.join(".")
            ))
        }
    }

    /// Parses the `query` of a check, which may reach into its data the way
    /// KCQL does: `cluster.addons.coredns.version` is the query
    /// `cluster.addons` and the path `[coredns, version]` into its answer.
    pub fn parse_path(
        value: &serde_yaml::Value,
        params: &[String],
    ) -> Result<(Self, Vec<String>), String> {
        match value {
            serde_yaml::Value::String(path) if path.trim().starts_with("node.") => {
                Ok((Self::node_path(path.trim())?, Vec::new()))
            }
            serde_yaml::Value::String(path) => Self::cluster_path(path, None, params),
            serde_yaml::Value::Mapping(map) => {
                if let Some(path) = map.get("cluster") {
                    let Some(path) = path.as_str() else {
                        return Err(format!("`query.cluster` must be a name; {QUERY_HINT}"));
                    };
                    Self::cluster_path(&format!("cluster.{path}"), Some(map), params)
                } else if let Some(resource) = map.get("resource") {
                    check_keys(map, &["resource"], "query")?;
                    Ok((Self::resource(resource, params)?, Vec::new()))
                } else if let Some(removed) = map.get("removedApis") {
                    check_keys(map, &["removedApis"], "query")?;
                    let q = apis::RemovedApisQuery::parse(removed, params)?;
                    Ok((Query::RemovedApis(q), Vec::new()))
                } else if let Some(command) = map.get("command") {
                    check_keys(map, &["command"], "query")?;
                    let Some(items) = command.as_sequence().filter(|s| !s.is_empty()) else {
                        return Err("`query.command` must be a non-empty list: the program and its arguments".into());
                    };
                    let argv = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| match item {
                            serde_yaml::Value::String(s) => Template::parse(s, params),
                            serde_yaml::Value::Number(n) => Template::parse(&n.to_string(), params),
                            _ => Err(format!(
                                "argument {} of `query.command` is not a string; quote it",
                                i + 1
                            )),
                        })
                        .collect::<Result<_, _>>()?;
                    Ok((Query::Command { argv }, Vec::new()))
                } else {
                    Err(format!("`query` names no data driver; {QUERY_HINT}"))
                }
            }
            _ => Err(format!(
                "`query` is neither a path nor a mapping; {QUERY_HINT}"
            )),
        }
    }

    fn node_path(path: &str) -> Result<Self, String> {
        let rest = path.trim_start_matches("node.");
        let root = rest.split('.').next().unwrap_or("");
        if !crate::node::ROOTS.contains(&root) {
            return Err(format!(
                "unknown query path `{path}`; node.* knows {}",
                crate::node::ROOTS
                    .iter()
                    .map(|r| format!("node.{r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(Query::Node {
            path: rest.to_owned(),
        })
    }

    fn cluster_path(
        path: &str,
        options: Option<&serde_yaml::Mapping>,
        params: &[String],
    ) -> Result<(Self, Vec<String>), String> {
        let empty = serde_yaml::Mapping::new();
        let map = options.unwrap_or(&empty);
        let mut segments = path.trim().split('.');
        let base = segments.by_ref().take(2).collect::<Vec<_>>().join(".");
        let rest: Vec<String> = segments.map(str::to_owned).collect();
        if rest.iter().any(String::is_empty) {
            return Err(format!(
                "the query path `{}` has an empty segment; write names joined by single dots, like `cluster.addons.coredns.version`",
                path.trim()
            ));
        }
        let query = match base.as_str() {
            "cluster.version" => {
                check_keys(map, &["cluster"], "query")?;
                ClusterQuery::Version
            }
            "cluster.apis" => {
                check_keys(map, &["cluster"], "query")?;
                ClusterQuery::Apis
            }
            "cluster.nodes" => {
                check_keys(map, &["cluster", "labelSelector", "fieldSelector"], "query")?;
                ClusterQuery::Nodes {
                    label_selector: string_field(map, "labelSelector", params, "query")?,
                    field_selector: string_field(map, "fieldSelector", params, "query")?,
                }
            }
            "cluster.addons" => {
                check_keys(map, &["cluster", "namespace"], "query")?;
                ClusterQuery::Addons {
                    namespace: string_field(map, "namespace", params, "query")?,
                }
            }
            "cluster.webhooks" => {
                check_keys(map, &["cluster"], "query")?;
                ClusterQuery::Webhooks
            }
            "cluster.services" => {
                check_keys(map, &["cluster", "namespace", "labelSelector"], "query")?;
                ClusterQuery::Services {
                    namespace: string_field(map, "namespace", params, "query")?,
                    label_selector: string_field(map, "labelSelector", params, "query")?,
                }
            }
            "cluster.servingCertificate" => {
                check_keys(map, &["cluster", "address"], "query")?;
                ClusterQuery::ServingCertificate {
                    address: string_field(map, "address", params, "query")?,
                }
            }
            _ => {
                return Err(format!(
                    "unknown query path `{}`; {QUERY_HINT}",
                    path.trim()
                ))
            }
        };
        Ok((Query::Cluster(query), rest))
    }

    /// How the query is written, without its options: `cluster.addons`.
    fn name(&self) -> String {
        match self {
            Query::Cluster(ClusterQuery::Version) => "cluster.version".into(),
            Query::Cluster(ClusterQuery::Apis) => "cluster.apis".into(),
            Query::Cluster(ClusterQuery::Nodes { .. }) => "cluster.nodes".into(),
            Query::Cluster(ClusterQuery::Addons { .. }) => "cluster.addons".into(),
            Query::Cluster(ClusterQuery::Webhooks) => "cluster.webhooks".into(),
            Query::Cluster(ClusterQuery::Services { .. }) => "cluster.services".into(),
            Query::Cluster(ClusterQuery::ServingCertificate { .. }) => {
                "cluster.servingCertificate".into()
            }
            Query::Cluster(ClusterQuery::Resource(_)) => "query.resource".into(),
            Query::Command { .. } => "query.command".into(),
            Query::Node { path } => format!("node.{path}"),
            Query::RemovedApis(_) => "query.removedApis".into(),
        }
    }

    /// The object every element of this query's data is, when its elements
    /// do not say: `(apiVersion, kind)`.
    pub fn element_kind(&self) -> Option<(String, String)> {
        match self {
            Query::Cluster(ClusterQuery::Nodes { .. }) => Some(("v1".into(), "Node".into())),
            Query::Cluster(ClusterQuery::Resource(r)) => Some((
                if r.group.is_empty() {
                    r.version.clone()
                } else {
                    format!("{}/{}", r.group, r.version)
                },
                r.kind.clone(),
            )),
            _ => None,
        }
    }

    fn resource(value: &serde_yaml::Value, params: &[String]) -> Result<Self, String> {
        let at = "query.resource";
        let Some(map) = value.as_mapping() else {
            return Err(format!("`{at}` must be a mapping; {QUERY_HINT}"));
        };
        check_keys(
            map,
            &[
                "group",
                "version",
                "kind",
                "namespace",
                "labelSelector",
                "fieldSelector",
            ],
            at,
        )?;
        let plain = |key: &str| -> Result<Option<String>, String> {
            match map.get(key) {
                None | Some(serde_yaml::Value::Null) => Ok(None),
                Some(serde_yaml::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("`{at}.{key}` must be a string")),
            }
        };
        let group = plain("group")?.unwrap_or_default();
        let group = if group == "core" {
            String::new()
        } else {
            group
        };
        let version = plain("version")?
            .ok_or_else(|| format!("`{at}.version` is missing; write e.g. `version: v1`"))?;
        let kind = plain("kind")?
            .ok_or_else(|| format!("`{at}.kind` is missing; write e.g. `kind: Deployment`"))?;
        Ok(Query::Cluster(ClusterQuery::Resource(ResourceQuery {
            group,
            version,
            kind,
            namespace: string_field(map, "namespace", params, at)?,
            label_selector: string_field(map, "labelSelector", params, at)?,
            field_selector: string_field(map, "fieldSelector", params, at)?,
        })))
    }

    /// Whether the query reads the Kubernetes API.
    pub fn needs_cluster(&self) -> bool {
        match self {
            Query::RemovedApis(q) => q.needs_cluster(),
            _ => matches!(self, Query::Cluster(_)),
        }
    }

    /// The query with its params filled in, as a name: what its data is
    /// kept under in the run's facts, and how messages name it.
    pub fn key(&self, ctx: &TaskContext) -> String {
        let render = |t: &Option<Template>| t.as_ref().map(|t| t.render(&ctx.params));
        let mut key = String::new();
        let mut opt = |name: &str, value: Option<String>| {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                key.push_str(&format!(" {name}={v}"));
            }
        };
        let head = match self {
            Query::Cluster(ClusterQuery::Version) => "cluster.version".to_owned(),
            Query::Cluster(ClusterQuery::Apis) => "cluster.apis".to_owned(),
            Query::Cluster(ClusterQuery::Nodes {
                label_selector,
                field_selector,
            }) => {
                opt("labelSelector", render(label_selector));
                opt("fieldSelector", render(field_selector));
                "cluster.nodes".to_owned()
            }
            Query::Cluster(ClusterQuery::Addons { namespace }) => {
                opt("namespace", render(namespace));
                "cluster.addons".to_owned()
            }
            Query::Cluster(ClusterQuery::Webhooks) => "cluster.webhooks".to_owned(),
            Query::Cluster(ClusterQuery::Services {
                namespace,
                label_selector,
            }) => {
                opt("namespace", render(namespace));
                opt("labelSelector", render(label_selector));
                "cluster.services".to_owned()
            }
            Query::Cluster(ClusterQuery::ServingCertificate { address }) => {
                opt("address", render(address));
                "cluster.servingCertificate".to_owned()
            }
            Query::Cluster(ClusterQuery::Resource(r)) => {
                opt("namespace", render(&r.namespace));
                opt("labelSelector", render(&r.label_selector));
                opt("fieldSelector", render(&r.field_selector));
                let gv = if r.group.is_empty() {
                    r.version.clone()
                } else {
                    format!("{}/{}", r.group, r.version)
                };
                format!("resource {gv} {}", r.kind)
            }
            Query::Node { path } => {
                // Each node answers for itself: its data is never shared
                // with another node's instance.
                if ctx.instance == kpilot_engine::InstanceId::global() {
                    format!("node.{path}")
                } else {
                    format!("node.{path} on {}", ctx.instance)
                }
            }
            Query::RemovedApis(q) => q.key(ctx),
            Query::Command { argv } => {
                let argv: Vec<String> = argv.iter().map(|a| a.render(&ctx.params)).collect();
                format!(
                    "command {}",
                    serde_json::to_string(&argv).unwrap_or_default()
                )
            }
        };
        format!("{head}{key}")
    }

    /// Reads the data, retrying a cluster that does not answer with backoff
    /// for at most `budget`.
    pub async fn fetch(
        &self,
        cluster: &Cluster,
        ctx: &TaskContext,
        budget: Duration,
    ) -> Result<serde_json::Value, DataError> {
        let name = self.key(ctx);
        match self {
            Query::Cluster(ClusterQuery::ServingCertificate { address }) => {
                let address = address
                    .as_ref()
                    .map(|t| t.render(&ctx.params))
                    .filter(|a| !a.is_empty());
                with_retry(&name, budget, || async {
                    let address = match &address {
                        Some(a) => a.clone(),
                        None => cluster.server().await.map_err(Failure::Permanent)?,
                    };
                    certificate::fetch(&name, &address).await
                })
                .await
            }
            Query::Cluster(q) => {
                with_retry(&name, budget, || async {
                    let client = cluster.client().await.map_err(Failure::Permanent)?;
                    cluster::fetch(&client, q, ctx, &name).await
                })
                .await
            }
            Query::Command { argv } => {
                let argv: Vec<String> = argv.iter().map(|a| a.render(&ctx.params)).collect();
                command::fetch(&name, &argv, ctx, budget).await
            }
            Query::RemovedApis(q) => q.fetch(cluster, ctx, &name, budget).await,
            Query::Node { path } => crate::node::query(path).await.map_err(|e| DataError::Node {
                query: name,
                message: e.to_string(),
            }),
        }
    }
}

/// The value at `path` in `data` (map keys, or list indices), or why there
/// is none: `query` names the data in the message.
pub fn select<'a>(
    data: &'a serde_json::Value,
    path: &[String],
    query: &str,
) -> Result<&'a serde_json::Value, String> {
    let mut at = data;
    let mut walked = query.to_owned();
    for segment in path {
        let next = match at {
            serde_json::Value::Object(map) => map.get(segment),
            serde_json::Value::Array(items) => {
                segment.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        };
        match next {
            Some(value) => at = value,
            None => {
                let what = match at {
                    serde_json::Value::Object(map) if map.is_empty() => "an empty map".to_owned(),
                    serde_json::Value::Object(map) => format!(
                        "a map of {}",
                        map.keys()
                            .take(8)
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                            + if map.len() > 8 { ", ..." } else { "" }
                    ),
                    serde_json::Value::Array(items) => format!("a list of {} item(s)", items.len()),
                    serde_json::Value::Null => "null".to_owned(),
                    other => format!("the value {other}"),
                };
                return Err(format!("{walked} has no `{segment}` (it is {what})"));
            }
        }
        walked.push('.');
        walked.push_str(segment);
    }
    Ok(at)
}

/// The backoff between requests: 250 ms doubling to at most 4 s, jittered.
fn backoff() -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoff {
        initial_interval: Duration::from_millis(250),
        multiplier: 2.0,
        randomization_factor: 0.2,
        max_interval: Duration::from_secs(4),
        max_elapsed_time: None,
        ..backoff::ExponentialBackoff::default()
    }
}

/// Runs `op` until it succeeds, fails for good, or `budget` is spent.
pub(crate) async fn with_retry<T, F, Fut>(
    query: &str,
    budget: Duration,
    mut op: F,
) -> Result<T, DataError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let start = Instant::now();
    let deadline = start + budget;
    let mut policy = backoff();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let last = match tokio::time::timeout(remaining, op()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(Failure::Permanent(e))) => return Err(e),
            Ok(Err(Failure::Transient(e))) => e,
            Err(_) => format!("no answer within {:.1}s", remaining.as_secs_f64()),
        };
        // The last request gets at least this long to answer.
        let last_chance = Duration::from_millis(200);
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = policy
            .next_backoff()
            .unwrap_or(Duration::from_secs(4))
            .min(left.saturating_sub(last_chance));
        if left < last_chance {
            return Err(DataError::Unreachable {
                query: query.to_owned(),
                attempts,
                elapsed: start.elapsed(),
                last,
            });
        }
        tracing::warn!(query, attempts, error = %last, "retrying in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

/// An error and its causes, joined with `: `, without repeating a cause the
/// message above it already shows.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Query, String> {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        Query::parse(&value, &["ns".to_owned()])
    }

    #[test]
    fn query_forms() {
        assert!(matches!(
            parse("cluster.version"),
            Ok(Query::Cluster(ClusterQuery::Version))
        ));
        assert!(matches!(
            parse("{cluster: nodes, labelSelector: 'a=b'}"),
            Ok(Query::Cluster(ClusterQuery::Nodes { .. }))
        ));
        assert!(matches!(
            parse("{resource: {group: apps, version: v1, kind: Deployment, namespace: '{{params.ns}}'}}"),
            Ok(Query::Cluster(ClusterQuery::Resource(_)))
        ));
        assert!(matches!(
            parse("{command: [./x.sh, 1]}"),
            Ok(Query::Command { .. })
        ));
        assert!(matches!(
            parse("node.sysctl"),
            Ok(Query::Node { path }) if path == "sysctl"
        ));
        assert!(matches!(
            parse("node.kernel.release"),
            Ok(Query::Node { path }) if path == "kernel.release"
        ));
        assert!(parse("node.bogus").is_err());
        assert!(matches!(
            parse("cluster.webhooks"),
            Ok(Query::Cluster(ClusterQuery::Webhooks))
        ));
        assert!(matches!(
            parse("{cluster: services, namespace: '{{params.ns}}', labelSelector: a=b}"),
            Ok(Query::Cluster(ClusterQuery::Services { .. }))
        ));
        assert!(matches!(
            parse("{cluster: servingCertificate, address: 'localhost:6443'}"),
            Ok(Query::Cluster(ClusterQuery::ServingCertificate {
                address: Some(_)
            }))
        ));
        assert!(matches!(
            parse("cluster.servingCertificate"),
            Ok(Query::Cluster(ClusterQuery::ServingCertificate {
                address: None
            }))
        ));
        let path = |yaml: &str| {
            let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
            Query::parse_path(&value, &[]).map(|(_, path)| path)
        };
        assert_eq!(
            path("cluster.addons.coredns.version"),
            Ok(vec!["coredns".to_owned(), "version".to_owned()])
        );
        assert_eq!(
            path("{cluster: addons.kube-proxy, namespace: x}"),
            Ok(vec!["kube-proxy".to_owned()])
        );
        assert!(path("cluster.addons..version").is_err());
        assert!(
            parse("cluster.addons.coredns").is_err(),
            "parse takes no path"
        );
        for bad in [
            "cluster.pods",
            "{cluster: version, labelSelector: x}",
            "{resource: {kind: Pod}}",
            "{resource: {version: v1, kind: Pod, labels: x}}",
            "{command: []}",
            "{command: [x], cluster: nodes}",
            "{nothing: 1}",
            "[cluster.nodes]",
            "{resource: {version: v1, kind: Pod, namespace: '{{params.nope}}'}}",
            "{cluster: webhooks, namespace: x}",
            "{cluster: services, fieldSelector: x}",
            "{cluster: servingCertificate, host: x}",
        ] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn select_walks_maps_and_lists_and_says_what_is_missing() {
        let data =
            serde_json::json!({"coredns": {"version": "1.11.3", "containers": [{"name": "c"}]}});
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            select(&data, &path("coredns.version"), "cluster.addons"),
            Ok(&serde_json::json!("1.11.3"))
        );
        assert_eq!(
            select(&data, &path("coredns.containers.0.name"), "cluster.addons"),
            Ok(&serde_json::json!("c"))
        );
        let missing = select(&data, &path("terway.version"), "cluster.addons");
        assert_eq!(
            missing,
            Err("cluster.addons has no `terway` (it is a map of `coredns`)".to_owned())
        );
    }

    #[tokio::test]
    async fn retry_is_bounded_and_counts_attempts() {
        let started = Instant::now();
        let mut calls = 0;
        let result: Result<serde_json::Value, _> =
            with_retry("cluster.version", Duration::from_millis(1500), || {
                calls += 1;
                async { Err(Failure::Transient("connection refused".into())) }
            })
            .await;
        let elapsed = started.elapsed();
        let Err(DataError::Unreachable { attempts, last, .. }) = result else {
            panic!("{result:?}");
        };
        assert!(attempts >= 3, "{attempts} attempts");
        assert_eq!(attempts, calls);
        assert_eq!(last, "connection refused");
        assert!(elapsed < Duration::from_millis(1600), "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_permanent_failure_is_not_retried() {
        let mut calls = 0;
        let result: Result<serde_json::Value, _> =
            with_retry("cluster.version", Duration::from_secs(5), || {
                calls += 1;
                async {
                    Err(Failure::Permanent(DataError::Config(
                        "no kubeconfig".into(),
                    )))
                }
            })
            .await;
        assert!(matches!(result, Err(DataError::Config(_))));
        assert_eq!(calls, 1);
    }
}
