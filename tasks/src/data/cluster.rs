//! The `cluster.*` driver: the Kubernetes API, connected like kubectl.
//!
//! The connection is made on the first query that needs it, so a workflow
//! without cluster checks never reads a kubeconfig.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, PodTemplateSpec, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kpilot_engine::TaskContext;
use kube::api::{Api, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::{chain, ClusterQuery, DataError, Failure, ResourceQuery};

/// How to reach the cluster, as kubectl's `--kubeconfig` and `--context`.
///
/// With neither set: `$KUBECONFIG` (or `~/.kube/config`), then the
/// in-cluster service account. With `context` only: that context of
/// `$KUBECONFIG` (or `~/.kube/config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// A kubeconfig file, instead of `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig, instead of its current context.
    pub context: Option<String>,
}

/// A cluster, connected on first use.
pub struct Cluster {
    config: ClusterConfig,
    client: OnceCell<kube::Client>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("config", &self.config)
            .field("connected", &self.client.initialized())
            .finish()
    }
}

/// How long a request may wait for a TCP/TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Objects asked for per list request, as `kubectl get --chunk-size` does: a
/// 5,000-node cluster is read in pages, so neither the API server nor kpilot
/// builds one response of every object at once.
pub const LIST_PAGE: u32 = 500;

/// Lists everything `api` selects with `lp`, a page of [`LIST_PAGE`] at a time,
/// handing each object to `each` as it comes so that a page is dropped before
/// the next is read.
pub(crate) async fn list_all<K>(
    api: &Api<K>,
    lp: &ListParams,
    mut each: impl FnMut(K),
) -> Result<(), kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut lp = lp.clone().limit(LIST_PAGE);
    loop {
        let page = api.list(&lp).await?;
        let next = page.metadata.continue_.filter(|t| !t.is_empty());
        page.items.into_iter().for_each(&mut each);
        match next {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Every object `api` selects with `lp`, read a page at a time (see [`list_all`]).
async fn list_every<K>(api: &Api<K>, lp: &ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    list_all(api, lp, |o| items.push(o)).await?;
    Ok(items)
}

impl Cluster {
    /// A cluster reached through `config`; nothing is read until a query runs.
    pub fn new(config: ClusterConfig) -> Self {
        Cluster {
            config,
            client: OnceCell::new(),
        }
    }

    /// Whether a client has been made (tests of laziness).
    pub fn connected(&self) -> bool {
        self.client.initialized()
    }

    /// The client, made on first use. Must be called inside a tokio runtime.
    pub async fn client(&self) -> Result<kube::Client, DataError> {
        self.client
            .get_or_try_init(|| async {
                let mut config = self.kube_config().await?;
                config.connect_timeout = Some(CONNECT_TIMEOUT);
                kube::Client::try_from(config).map_err(|e| DataError::Config(chain(&e)))
            })
            .await
            .cloned()
    }

    /// Every node of the cluster, as `query: cluster.nodes` shows them
    /// (`[{name, labels, addresses, ...}]`), asking again with backoff for
    /// at most `budget` while the API server does not answer.
    pub async fn nodes(&self, budget: Duration) -> Result<Value, DataError> {
        let name = "cluster.nodes";
        super::with_retry(name, budget, || async {
            let client = self.client().await.map_err(Failure::Permanent)?;
            let mut nodes = Vec::new();
            list_all(&Api::<Node>::all(client), &ListParams::default(), |n| {
                nodes.push(node(&n))
            })
            .await
            .map_err(|e| failure(name, e))?;
            Ok(Value::Array(nodes))
        })
        .await
    }

    /// The API server's address (`https://host:port`), as the kubeconfig
    /// (or the in-cluster environment) gives it.
    pub async fn server(&self) -> Result<String, DataError> {
        Ok(self.kube_config().await?.cluster_url.to_string())
    }

    /// The API server's address and its `/version` (`v1.34.4`), asking again
    /// with backoff for at most `budget` while it does not answer.
    pub async fn identity(&self, budget: Duration) -> Result<(String, String), DataError> {
        let server = self.kube_config().await?.cluster_url.to_string();
        let name = "cluster.version";
        let version = super::with_retry(name, budget, || async {
            let client = self.client().await.map_err(Failure::Permanent)?;
            let info = client
                .apiserver_version()
                .await
                .map_err(|e| failure(name, e))?;
            Ok(Value::String(info.git_version))
        })
        .await?;
        Ok((
            server.trim_end_matches('/').to_owned(),
            version.as_str().unwrap_or_default().to_owned(),
        ))
    }

    async fn kube_config(&self) -> Result<kube::Config, DataError> {
        let options = KubeConfigOptions {
            context: self.config.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &self.config.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                    DataError::Config(format!("kubeconfig {}: {}", path.display(), chain(&e)))
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None if options.context.is_some() => kube::Config::from_kubeconfig(&options).await,
            None => {
                return kube::Config::infer()
                    .await
                    .map_err(|e| DataError::Config(chain(&e)))
            }
        };
        config.map_err(|e| DataError::Config(chain(&e)))
    }
}

/// Sorts a client error into worth retrying or not.
pub(crate) fn failure(query: &str, error: kube::Error) -> Failure {
    match &error {
        kube::Error::Api(r) if r.code == 429 || r.code >= 500 => Failure::Transient(chain(&error)),
        // A continue token the API server no longer honours (the list took
        // longer than etcd keeps its revision): the whole list is read again.
        kube::Error::Api(r) if r.code == 410 => Failure::Transient(chain(&error)),
        kube::Error::Api(r) => Failure::Permanent(DataError::Api {
            query: query.to_owned(),
            message: format!(
                "the API server answered {} {}: {}",
                r.code, r.reason, r.message
            ),
        }),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            Failure::Transient(chain(&error))
        }
        _ => Failure::Permanent(DataError::Api {
            query: query.to_owned(),
            message: chain(&error),
        }),
    }
}

/// One request (or one set of requests) for `query`.
pub(crate) async fn fetch(
    client: &kube::Client,
    query: &ClusterQuery,
    ctx: &TaskContext,
    name: &str,
) -> Result<Value, Failure> {
    let fail = |e| failure(name, e);
    let render = |t: &Option<crate::params::Template>| {
        t.as_ref()
            .map(|t| t.render(&ctx.params))
            .filter(|s| !s.is_empty())
    };
    let list_params = |labels: Option<String>, fields: Option<String>| {
        let mut lp = ListParams::default();
        if let Some(l) = labels {
            lp = lp.labels(&l);
        }
        if let Some(f) = fields {
            lp = lp.fields(&f);
        }
        lp
    };
    match query {
        ClusterQuery::Version => {
            let info = client.apiserver_version().await.map_err(fail)?;
            Ok(serde_json::to_value(info).unwrap_or(Value::Null))
        }
        ClusterQuery::Apis => {
            let mut apis: Vec<String> = client
                .list_core_api_versions()
                .await
                .map_err(fail)?
                .versions;
            for group in client.list_api_groups().await.map_err(fail)?.groups {
                apis.extend(group.versions.into_iter().map(|v| v.group_version));
            }
            Ok(json!(apis))
        }
        ClusterQuery::Nodes {
            label_selector,
            field_selector,
        } => {
            let lp = list_params(render(label_selector), render(field_selector));
            let mut nodes = Vec::new();
            list_all(&Api::<Node>::all(client.clone()), &lp, |n| {
                nodes.push(node(&n))
            })
            .await
            .map_err(fail)?;
            Ok(Value::Array(nodes))
        }
        ClusterQuery::Addons { namespace } => {
            let ns = render(namespace).unwrap_or_else(|| "kube-system".to_owned());
            let lp = ListParams::default();
            let mut addons = serde_json::Map::new();
            list_all(
                &Api::<DaemonSet>::namespaced(client.clone(), &ns),
                &lp,
                |ds| {
                    let (name, value) = daemonset(&ds, &ns);
                    addons.insert(name, value);
                },
            )
            .await
            .map_err(fail)?;
            list_all(
                &Api::<Deployment>::namespaced(client.clone(), &ns),
                &lp,
                |d| {
                    let (name, value) = deployment(&d, &ns);
                    addons.entry(name).or_insert(value);
                },
            )
            .await
            .map_err(fail)?;
            Ok(Value::Object(addons))
        }
        ClusterQuery::Webhooks => webhooks(client, name).await,
        ClusterQuery::Services {
            namespace,
            label_selector,
        } => {
            let lp = list_params(render(label_selector), None);
            services(client, render(namespace).as_deref(), &lp, name).await
        }
        // Read by a TLS handshake, not through the client (see super::certificate).
        ClusterQuery::ServingCertificate { .. } => Err(Failure::Permanent(DataError::Api {
            query: name.to_owned(),
            message: "the serving certificate is not read through the API".into(),
        })),
        ClusterQuery::Resource(r) => resource(client, r, ctx, name).await,
    }
}

/// Ready and not-ready endpoint addresses of each Service of a namespace (all
/// namespaces when `None`), by `namespace/name`, from its EndpointSlices.
async fn endpoint_counts(
    client: &kube::Client,
    namespace: Option<&str>,
    name: &str,
) -> Result<BTreeMap<String, (usize, usize)>, Failure> {
    let api: Api<EndpointSlice> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let slices = list_every(&api, &ListParams::default().labels(SERVICE_NAME_LABEL))
        .await
        .map_err(|e| failure(name, e))?;
    // A Service's addresses may be spread over several slices, and during a
    // rollout the same address may be in two: count each address once.
    let mut seen: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for slice in &slices {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let key = format!(
            "{}/{service}",
            slice.metadata.namespace.as_deref().unwrap_or_default()
        );
        let entry = seen.entry(key).or_default();
        for endpoint in &slice.endpoints {
            // The API documents an unset `ready` as ready.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            let set = if ready { &mut entry.0 } else { &mut entry.1 };
            set.extend(endpoint.addresses.iter().cloned());
        }
    }
    Ok(seen
        .into_iter()
        .map(|(k, (ready, not_ready))| {
            let not_ready = not_ready.difference(&ready).count();
            (k, (ready.len(), not_ready))
        })
        .collect())
}

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `query: cluster.services`: each Service, with its endpoints.
async fn services(
    client: &kube::Client,
    namespace: Option<&str>,
    lp: &ListParams,
    name: &str,
) -> Result<Value, Failure> {
    let api: Api<Service> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = list_every(&api, lp).await.map_err(|e| failure(name, e))?;
    let counts = endpoint_counts(client, namespace, name).await?;
    let items = list
        .iter()
        .map(|svc| {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let svc_name = svc.metadata.name.clone().unwrap_or_default();
            let spec = svc.spec.as_ref();
            let selector = spec.and_then(|s| s.selector.clone()).unwrap_or_default();
            let (ready, not_ready) = counts
                .get(&format!("{ns}/{svc_name}"))
                .copied()
                .unwrap_or((0, 0));
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "namespace": ns,
                "name": svc_name,
                "labels": svc.metadata.labels.clone().unwrap_or_default(),
                "type": spec.and_then(|s| s.type_.clone()).unwrap_or_else(|| "ClusterIP".into()),
                "clusterIP": spec.and_then(|s| s.cluster_ip.clone()),
                "hasSelector": !selector.is_empty(),
                "selector": selector,
                "ports": spec
                    .and_then(|s| s.ports.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|p| json!({"name": p.name, "port": p.port, "protocol": p.protocol}))
                    .collect::<Vec<_>>(),
                "endpoints": {"ready": ready, "notReady": not_ready},
            })
        })
        .collect();
    Ok(Value::Array(items))
}

/// One admission webhook as `query: cluster.webhooks` shows it.
struct Hook<'a> {
    configuration: &'a kube::core::ObjectMeta,
    kind: &'static str,
    name: &'a str,
    failure_policy: Option<&'a str>,
    client_config: &'a WebhookClientConfig,
    rules: Value,
    namespace_selector: Value,
    object_selector: Value,
    timeout_seconds: Option<i32>,
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `query: cluster.webhooks`: every webhook of every Validating and
/// Mutating WebhookConfiguration, with what its service has behind it.
async fn webhooks(client: &kube::Client, name: &str) -> Result<Value, Failure> {
    let lp = ListParams::default();
    let validating = list_every(
        &Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        &lp,
    )
    .await
    .map_err(|e| failure(name, e))?;
    let mutating = list_every(
        &Api::<MutatingWebhookConfiguration>::all(client.clone()),
        &lp,
    )
    .await
    .map_err(|e| failure(name, e))?;
    let mut hooks = Vec::new();
    for c in &validating {
        for w in c.webhooks.iter().flatten() {
            hooks.push(Hook {
                configuration: &c.metadata,
                kind: "ValidatingWebhookConfiguration",
                name: &w.name,
                failure_policy: w.failure_policy.as_deref(),
                client_config: &w.client_config,
                rules: to_value(&w.rules),
                namespace_selector: to_value(&w.namespace_selector),
                object_selector: to_value(&w.object_selector),
                timeout_seconds: w.timeout_seconds,
            });
        }
    }
    for c in &mutating {
        for w in c.webhooks.iter().flatten() {
            hooks.push(Hook {
                configuration: &c.metadata,
                kind: "MutatingWebhookConfiguration",
                name: &w.name,
                failure_policy: w.failure_policy.as_deref(),
                client_config: &w.client_config,
                rules: to_value(&w.rules),
                namespace_selector: to_value(&w.namespace_selector),
                object_selector: to_value(&w.object_selector),
                timeout_seconds: w.timeout_seconds,
            });
        }
    }
    // Each namespace a webhook's service lives in is read once.
    let namespaces: BTreeSet<&str> = hooks
        .iter()
        .filter_map(|h| h.client_config.service.as_ref())
        .map(|s| s.namespace.as_str())
        .collect();
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut counts = BTreeMap::new();
    for ns in namespaces {
        let services = list_every(&Api::<Service>::namespaced(client.clone(), ns), &lp)
            .await
            .map_err(|e| failure(name, e))?;
        known.extend(
            services
                .iter()
                .filter_map(|s| s.metadata.name.as_ref())
                .map(|n| format!("{ns}/{n}")),
        );
        counts.extend(endpoint_counts(client, Some(ns), name).await?);
    }
    let items = hooks
        .iter()
        .map(|h| {
            let configuration = h.configuration.name.clone().unwrap_or_default();
            let service = h.client_config.service.as_ref();
            let key = service.map(|s| format!("{}/{}", s.namespace, s.name));
            let (ready, not_ready) = key
                .as_ref()
                .and_then(|k| counts.get(k))
                .copied()
                .unwrap_or((0, 0));
            json!({
                "name": format!("{configuration}/{}", h.name),
                "webhook": h.name,
                "configuration": configuration,
                "type": if h.kind.starts_with("Validating") { "validating" } else { "mutating" },
                "object": {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": h.kind,
                    "name": configuration,
                },
                // The API server's default when the field is unset.
                "failurePolicy": h.failure_policy.unwrap_or("Fail"),
                "url": h.client_config.url,
                "service": service.map(|s| json!({
                    "namespace": s.namespace,
                    "name": s.name,
                    "port": s.port.unwrap_or(443),
                    "path": s.path,
                    "exists": key.as_ref().is_some_and(|k| known.contains(k)),
                })),
                "endpoints": {"ready": ready, "notReady": not_ready},
                "rules": h.rules,
                "namespaceSelector": h.namespace_selector,
                "objectSelector": h.object_selector,
                "timeoutSeconds": h.timeout_seconds.unwrap_or(10),
            })
        })
        .collect();
    Ok(Value::Array(items))
}

async fn resource(
    client: &kube::Client,
    r: &ResourceQuery,
    ctx: &TaskContext,
    name: &str,
) -> Result<Value, Failure> {
    let gvk = GroupVersionKind::gvk(&r.group, &r.version, &r.kind);
    let not_served = |why: String| {
        Failure::Permanent(DataError::Api {
            query: name.to_owned(),
            message: format!(
                "the API server does not serve kind {} in {}: {why}",
                r.kind,
                if r.group.is_empty() {
                    r.version.clone()
                } else {
                    format!("{}/{}", r.group, r.version)
                }
            ),
        })
    };
    let (ar, caps) = match kube::discovery::pinned_kind(client, &gvk).await {
        Ok(found) => found,
        Err(kube::Error::Discovery(e)) => return Err(not_served(e.to_string())),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            return Err(not_served(format!("{} {}", e.code, e.message)))
        }
        Err(e) => return Err(failure(name, e)),
    };
    let namespace = r
        .namespace
        .as_ref()
        .map(|t| t.render(&ctx.params))
        .filter(|s| !s.is_empty());
    let api: Api<DynamicObject> = match (&namespace, caps.scope) {
        (Some(ns), kube::discovery::Scope::Namespaced) => {
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        _ => Api::all_with(client.clone(), &ar),
    };
    let mut lp = ListParams::default();
    if let Some(l) = r.label_selector.as_ref().map(|t| t.render(&ctx.params)) {
        if !l.is_empty() {
            lp = lp.labels(&l);
        }
    }
    if let Some(f) = r.field_selector.as_ref().map(|t| t.render(&ctx.params)) {
        if !f.is_empty() {
            lp = lp.fields(&f);
        }
    }
    let mut items = Vec::new();
    list_all(&api, &lp, |mut o: DynamicObject| {
        if o.types.is_none() {
            o.types = Some(kube::core::TypeMeta {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
            });
        }
        // Bookkeeping of server-side apply, often the largest part of an
        // object, that no check reads (kubectl get leaves it out too).
        o.metadata.managed_fields = None;
        items.push(serde_json::to_value(o).unwrap_or(Value::Null));
    })
    .await
    .map_err(|e| failure(name, e))?;
    Ok(Value::Array(items))
}

/// A node as checks see it.
fn node(n: &Node) -> Value {
    let meta = &n.metadata;
    let spec = n.spec.as_ref();
    let status = n.status.as_ref();
    let info = status.and_then(|s| s.node_info.as_ref());
    let mut conditions = serde_json::Map::new();
    for c in status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        conditions.insert(
            c.type_.clone(),
            json!({
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": c.last_transition_time,
            }),
        );
    }
    let ready = conditions
        .get("Ready")
        .and_then(|c| c["status"].as_str())
        .is_some_and(|s| s == "True");
    let labels = meta.labels.clone().unwrap_or_default();
    let roles: Vec<&str> = labels
        .keys()
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    let taints: Vec<Value> = spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|t| json!({"key": t.key, "value": t.value, "effect": t.effect}))
        .collect();
    let addresses: Vec<Value> = status
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .map(|a| json!({"type": a.type_, "address": a.address}))
        .collect();
    let field = |f: fn(&k8s_openapi::api::core::v1::NodeSystemInfo) -> &String| {
        info.map(|i| f(i).clone()).unwrap_or_default()
    };
    json!({
        "name": meta.name.clone().unwrap_or_default(),
        "labels": labels,
        "roles": roles,
        "taints": taints,
        "unschedulable": spec.and_then(|s| s.unschedulable).unwrap_or(false),
        "ready": ready,
        "conditions": conditions,
        "kubeletVersion": field(|i| &i.kubelet_version),
        "kubeProxyVersion": field(|i| &i.kube_proxy_version),
        "containerRuntimeVersion": field(|i| &i.container_runtime_version),
        "kernelVersion": field(|i| &i.kernel_version),
        "osImage": field(|i| &i.os_image),
        "architecture": field(|i| &i.architecture),
        "addresses": addresses,
        "capacity": status.and_then(|s| s.capacity.clone()).unwrap_or_default(),
        "allocatable": status.and_then(|s| s.allocatable.clone()).unwrap_or_default(),
        "createdAt": meta.creation_timestamp,
    })
}

/// The tag of an image reference (`registry.k8s.io/kube-proxy:v1.33.5` →
/// `v1.33.5`), without any digest; `None` when it has no tag.
pub fn image_tag(image: &str) -> Option<&str> {
    let image = image.split_once('@').map_or(image, |(i, _)| i);
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    image[name_start..]
        .split_once(':')
        .map(|(_, tag)| tag)
        .filter(|t| !t.is_empty())
}

fn containers(template: &PodTemplateSpec) -> Vec<Value> {
    template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            json!({"name": c.name, "version": image_tag(&image), "image": image})
        })
        .collect()
}

fn addon(
    name: String,
    kind: &str,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
    containers: Vec<Value>,
    counts: [i32; 4],
) -> (String, Value) {
    let first = containers.first().cloned().unwrap_or(Value::Null);
    let [desired, ready, updated, available] = counts;
    let value = json!({
        "apiVersion": "apps/v1",
        "name": name,
        "kind": kind,
        "namespace": namespace,
        "labels": labels.cloned().unwrap_or_default(),
        "image": first["image"],
        "version": first["version"],
        "containers": containers,
        "desired": desired,
        "ready": ready,
        "updated": updated,
        "available": available,
    });
    (name, value)
}

fn daemonset(ds: &DaemonSet, namespace: &str) -> (String, Value) {
    let status = ds.status.as_ref();
    let count = |f: fn(&k8s_openapi::api::apps::v1::DaemonSetStatus) -> i32| status.map_or(0, f);
    addon(
        ds.metadata.name.clone().unwrap_or_default(),
        "DaemonSet",
        namespace,
        ds.metadata.labels.as_ref(),
        ds.spec
            .as_ref()
            .map(|s| containers(&s.template))
            .unwrap_or_default(),
        [
            count(|s| s.desired_number_scheduled),
            count(|s| s.number_ready),
            count(|s| s.updated_number_scheduled.unwrap_or(0)),
            count(|s| s.number_available.unwrap_or(0)),
        ],
    )
}

fn deployment(d: &Deployment, namespace: &str) -> (String, Value) {
    let status = d.status.as_ref();
    let spec = d.spec.as_ref();
    addon(
        d.metadata.name.clone().unwrap_or_default(),
        "Deployment",
        namespace,
        d.metadata.labels.as_ref(),
        spec.map(|s| containers(&s.template)).unwrap_or_default(),
        [
            spec.and_then(|s| s.replicas).unwrap_or(1),
            status.and_then(|s| s.ready_replicas).unwrap_or(0),
            status.and_then(|s| s.updated_replicas).unwrap_or(0),
            status.and_then(|s| s.available_replicas).unwrap_or(0),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        assert_eq!(
            image_tag("registry.k8s.io/kube-proxy:v1.33.5"),
            Some("v1.33.5")
        );
        assert_eq!(
            image_tag("registry.k8s.io/coredns/coredns:v1.11.3@sha256:abc"),
            Some("v1.11.3")
        );
        assert_eq!(image_tag("localhost:5000/kube-proxy"), None);
        assert_eq!(
            image_tag("localhost:5000/kube-proxy:1.0.9.14"),
            Some("1.0.9.14")
        );
        assert_eq!(image_tag("busybox"), None);
        assert_eq!(image_tag("busybox@sha256:abc"), None);
    }

    #[tokio::test]
    async fn no_connection_until_a_query() {
        let cluster = Cluster::new(ClusterConfig {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            context: None,
        });
        assert!(!cluster.connected());
        let Err(err) = cluster.client().await else {
            panic!("connected with no kubeconfig");
        };
        assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
        assert!(!cluster.connected());
    }
}
