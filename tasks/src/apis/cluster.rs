//! Objects read from a cluster: the apiVersion each object was applied in (its last-applied
//! annotation, or one a user names) and the objects of each Helm 3 release's latest revision.
//!
//! The API server converts every stored object to the version it is asked for, so a served
//! object's apiVersion says nothing about what its owner applies; only what the owner wrote
//! (kubectl's annotation, Helm's release manifest) does.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta};
use kube::discovery::{verbs, ApiCapabilities, ApiResource, Discovery, Scope};

use super::{
    applied_type, scan_helm_secret, ApiError, ApiVersionTable, ManifestObject, ObjectRef, Scan,
    ScanOptions,
};

/// Objects per list request: big clusters are read a page at a time.
const PAGE: u32 = 500;

/// Helm release Secrets read at once (each may hold up to 1 MiB).
const RELEASES_AT_ONCE: usize = 8;

/// The Secret type Helm 3 stores a release in.
const HELM_RELEASE_TYPE: &str = "helm.sh/release.v1";

/// What part of the cluster [`scan_cluster`] reads.
#[derive(Debug, Clone, Default)]
pub struct ClusterScope {
    /// Only this namespace (cluster-scoped objects are then left out); all when `None`.
    pub namespace: Option<String>,
    /// Annotations besides the last-applied one that hold an applied manifest.
    pub options: ScanOptions,
}

/// A request to the API server that failed; what it was for, and the client's error.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct ClusterError {
    /// The request, e.g. `listing apps/v1 Deployment`.
    pub what: String,
    /// The client's error.
    #[source]
    pub source: kube::Error,
}

/// Reads, for every kind `table` names that the API server serves, each object's applied
/// apiVersion (source `cluster`), and the objects of every Helm release (source
/// `helm:NAMESPACE/RELEASE`). An object whose annotation or release cannot be read is an error
/// of the returned [`Scan`]; a failed request is a [`ClusterError`].
pub async fn scan_cluster(
    client: &kube::Client,
    table: &ApiVersionTable,
    scope: &ClusterScope,
) -> Result<Scan, ClusterError> {
    let mut scan = Scan::default();
    // The same object can be served in two groups (Ingress in extensions and
    // networking.k8s.io on an old server, Event in the core group and events.k8s.io): it is
    // one object, judged once. Only objects that carry an applied manifest are remembered.
    let mut seen = HashSet::new();
    for (ar, caps) in served_kinds(client, table, scope).await? {
        applied(client, &ar, &caps, scope, &mut seen, &mut scan).await?;
    }
    helm_releases(client, scope, &mut scan).await?;
    Ok(scan)
}

/// The group of an apiVersion: `apps` of `apps/v1`, `` (core) of `v1`.
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// The resources to read: each kind the table names, in every group of the table (and of its
/// replacements) that the server serves it in, at the group's most stable version; a row
/// without a kind names every kind of its group. Sorted by group and kind.
async fn served_kinds(
    client: &kube::Client,
    table: &ApiVersionTable,
    scope: &ClusterScope,
) -> Result<Vec<(ApiResource, ApiCapabilities)>, ClusterError> {
    let mut groups = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    let mut whole_groups = BTreeSet::new();
    for row in table.rows() {
        groups.insert(group_of(&row.version));
        if let Some(r) = &row.replacement_api {
            groups.insert(group_of(r));
        }
        if row.kind.is_empty() {
            whole_groups.insert(group_of(&row.version));
        } else {
            kinds.insert(row.kind.as_str());
        }
    }
    let allow: Vec<&str> = groups.into_iter().collect();
    let discovery = Discovery::new(client.clone())
        .filter(&allow)
        .run()
        .await
        .map_err(|source| ClusterError {
            what: "discovering the served APIs".to_string(),
            source,
        })?;
    let mut resources = Vec::new();
    for group in discovery.groups_alphabetical() {
        let mut found: Vec<_> = group
            .resources_by_stability()
            .into_iter()
            .filter(|(ar, caps)| {
                (kinds.contains(ar.kind.as_str()) || whole_groups.contains(group.name()))
                    && caps.supports_operation(verbs::LIST)
                    && !(scope.namespace.is_some() && caps.scope == Scope::Cluster)
            })
            .collect();
        found.sort_by(|a, b| a.0.kind.cmp(&b.0.kind));
        resources.extend(found);
    }
    Ok(resources)
}

fn list_error(what: String) -> impl FnOnce(kube::Error) -> ClusterError {
    move |source| ClusterError { what, source }
}

/// `Kind namespace/name` or `Kind name`.
fn object_name(kind: &str, meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    match &meta.namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The applied apiVersion of every object of one resource, a page at a time; only metadata is
/// asked for, since the annotations are all that is read.
async fn applied(
    client: &kube::Client,
    ar: &ApiResource,
    caps: &ApiCapabilities,
    scope: &ClusterScope,
    seen: &mut HashSet<String>,
    scan: &mut Scan,
) -> Result<(), ClusterError> {
    let api: Api<DynamicObject> = match (&scope.namespace, &caps.scope) {
        (Some(ns), Scope::Namespaced) => Api::namespaced_with(client.clone(), ns, ar),
        _ => Api::all_with(client.clone(), ar),
    };
    let mut lp = ListParams::default().limit(PAGE);
    loop {
        let page = api.list_metadata(&lp).await.map_err(list_error(format!(
            "listing {} {}",
            ar.api_version, ar.kind
        )))?;
        for o in page.items {
            let meta = o.metadata;
            let Some(annotations) = &meta.annotations else {
                continue;
            };
            let found = applied_type(|k| annotations.get(k).map(String::as_str), &scope.options);
            if matches!(found, Ok(None)) {
                continue;
            }
            if let Some(uid) = &meta.uid {
                if !seen.insert(uid.clone()) {
                    continue;
                }
            }
            match found {
                // A controller copies its object's annotations to the objects it makes (a
                // Deployment's to its ReplicaSets): those are about another kind, not this one.
                Ok(Some((_, kind))) if kind != ar.kind => {}
                Ok(Some((api_version, kind))) => scan.objects.push(ManifestObject {
                    file: PathBuf::from(object_name(&ar.kind, &meta)),
                    object: ObjectRef {
                        api_version,
                        kind,
                        namespace: meta.namespace.clone(),
                        name: meta.name.clone().unwrap_or_default(),
                    },
                    source: "cluster".to_string(),
                    document: 1,
                }),
                Ok(None) => {}
                Err(problem) => scan.errors.push(ApiError::Object {
                    object: Box::new(ObjectRef {
                        api_version: ar.api_version.clone(),
                        kind: ar.kind.clone(),
                        namespace: meta.namespace.clone(),
                        name: meta.name.clone().unwrap_or_default(),
                    }),
                    origin: "cluster".to_string(),
                    problem,
                }),
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// One revision of a release, as its Secret's labels (or name) tell.
struct Revision {
    secret: String,
    version: u64,
    status: String,
}

/// The release and revision of a Helm Secret: Helm labels it `name`, `version` and `status`,
/// and names it `sh.helm.release.v1.RELEASE.vVERSION`.
fn revision(meta: &ObjectMeta) -> (String, Revision) {
    let secret = meta.name.clone().unwrap_or_default();
    let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k)).cloned();
    let from_name = secret
        .strip_prefix("sh.helm.release.v1.")
        .and_then(|rest| rest.rsplit_once(".v"));
    let release = label("name")
        .or_else(|| from_name.map(|(r, _)| r.to_string()))
        .unwrap_or_else(|| secret.clone());
    let version = label("version")
        .and_then(|v| v.parse().ok())
        .or_else(|| from_name.and_then(|(_, v)| v.parse().ok()))
        .unwrap_or(0);
    let status = label("status").unwrap_or_default();
    (
        release,
        Revision {
            secret,
            version,
            status,
        },
    )
}

/// The objects of each release's latest revision: Helm keeps a Secret per revision, and only
/// the latest says what is deployed (none, once uninstalled with `--keep-history`).
async fn helm_releases(
    client: &kube::Client,
    scope: &ClusterScope,
    scan: &mut Scan,
) -> Result<(), ClusterError> {
    let all: Api<Secret> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut latest: BTreeMap<(String, String), Revision> = BTreeMap::new();
    let mut lp = ListParams::default()
        .fields(&format!("type={HELM_RELEASE_TYPE}"))
        .limit(PAGE);
    loop {
        let page = all
            .list_metadata(&lp)
            .await
            .map_err(list_error("listing Helm release Secrets".to_string()))?;
        for o in page.items {
            let ns = o.metadata.namespace.clone().unwrap_or_default();
            let (release, rev) = revision(&o.metadata);
            let slot = latest.entry((ns, release));
            match slot {
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    if rev.version > e.get().version {
                        e.insert(rev);
                    }
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(rev);
                }
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => break,
        }
    }
    let wanted: Vec<(String, String, String)> = latest
        .into_iter()
        .filter(|(_, rev)| rev.status != "uninstalled")
        .map(|((ns, release), rev)| (ns, release, rev.secret))
        .collect();
    type Fetched = Option<(String, String, String, serde_json::Value)>;
    let secrets: Vec<Fetched> = futures_util::stream::iter(wanted)
        .map(|(ns, release, name)| {
            let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
            async move {
                match api.get_opt(&name).await {
                    // Deleted since the list: that revision is gone, not unreadable.
                    Ok(None) => Ok(None),
                    Ok(Some(secret)) => {
                        let secret = serde_json::to_value(secret).unwrap_or_default();
                        Ok(Some((ns, release, name, secret)))
                    }
                    Err(source) => Err(ClusterError {
                        what: format!("reading Helm release Secret {ns}/{name}"),
                        source,
                    }),
                }
            }
        })
        .buffered(RELEASES_AT_ONCE)
        .try_collect()
        .await?;
    for (ns, release, name, secret) in secrets.into_iter().flatten() {
        let found = scan_helm_secret(&secret, &format!("Secret {ns}/{name}"));
        scan.objects.extend(found.objects);
        scan.errors.extend(found.errors.into_iter().map(|e| {
            let problem = match e {
                ApiError::Document { problem, .. } => problem,
                other => other.to_string(),
            };
            ApiError::Object {
                object: Box::new(ObjectRef {
                    api_version: "v1".to_string(),
                    kind: "Secret".to_string(),
                    namespace: Some(ns.clone()),
                    name: name.clone(),
                }),
                origin: format!("helm:{ns}/{release}"),
                problem,
            }
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_revision_from_labels_or_the_secret_name() {
        let (release, rev) = revision(&meta(
            "sh.helm.release.v1.web.v3",
            &[("name", "web"), ("version", "3"), ("status", "deployed")],
        ));
        assert_eq!((release.as_str(), rev.version), ("web", 3));
        assert_eq!(rev.status, "deployed");
        // Without labels, the name tells; a release name may hold dots.
        let (release, rev) = revision(&meta("sh.helm.release.v1.my.app.v12", &[]));
        assert_eq!((release.as_str(), rev.version), ("my.app", 12));
        let (release, rev) = revision(&meta("odd", &[]));
        assert_eq!((release.as_str(), rev.version), ("odd", 0));
    }

    #[test]
    fn groups_of_api_versions() {
        assert_eq!(group_of("extensions/v1beta1"), "extensions");
        assert_eq!(group_of("v1"), "");
        assert_eq!(
            group_of("rbac.authorization.k8s.io/v1"),
            "rbac.authorization.k8s.io"
        );
    }
}
