//! Kubernetes actions on nodes: cordon, uncordon and drain, made through the
//! API server (kube-rs), and the node safety that undoes a run's cordons.
//!
//! The requests are built by pure functions ([`cordon_patch`],
//! [`uncordon_patch`], [`eviction`], [`drain::plan`]) tested offline; the
//! functions that call the API sit on top of them.
//!
//! A run marks every node it cordons twice: in its ledger (`cordoned/NODE`,
//! written before the patch, so a kill between the two loses nothing) and on
//! the node, with the annotation [`CORDONED_BY`] naming the run (the same
//! patch that cordons it). Only a node whose annotation names the run is
//! ever uncordoned by it: a node a person cordoned stays cordoned.

pub mod drain;
pub mod safety;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{json, Value};

use crate::data::{chain, Cluster};
use crate::params::Template;

/// The annotation naming the run that cordoned a node.
pub const CORDONED_BY: &str = "kpilot.io/cordoned-by";

/// The ledger prefix of the nodes a run has cordoned (`cordoned/NODE`).
pub const CORDONED: &str = "cordoned/";

/// Why a node action could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The cluster could not be reached (kubeconfig, connection).
    #[error("{0}")]
    Connect(String),
    /// An API request failed.
    #[error("{what}: {message}")]
    Api {
        /// What was asked.
        what: String,
        /// What the API server (or the connection) said.
        message: String,
    },
    /// The run's ledger could not be written.
    #[error("{0}")]
    Ledger(String),
}

impl ActionError {
    pub(crate) fn api(what: impl Into<String>, e: &kube::Error) -> Self {
        ActionError::Api {
            what: what.into(),
            message: api_message(e),
        }
    }
}

/// What the API server said, without kube-rs's wrapping.
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(r) => format!("{} ({} {})", r.message, r.code, r.reason),
        other => chain(other),
    }
}

/// The HTTP status of an API error, when the API server answered.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(r) => Some(r.code),
        _ => None,
    }
}

/// Which nodes a `cordon`, `uncordon` or `drain` step acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChoice {
    /// The node of the per-node instance (`cordon: {}`).
    Instance,
    /// Nodes by name (`nodes: [a, b]`), each maybe holding `{{params.NAME}}`.
    Names(Vec<Template>),
    /// Nodes by label selector (`selector: "role=worker"`), maybe holding
    /// `{{params.NAME}}`.
    Selector(Template),
}

impl NodeChoice {
    /// Reads `nodes` or `selector` of a body (`kind` names it in errors;
    /// `params` are the workflow's); neither means the instance's node.
    pub fn parse(
        kind: &str,
        body: &serde_yaml::Mapping,
        params: &[String],
    ) -> Result<Self, String> {
        let nodes = body.get("nodes");
        let selector = body.get("selector");
        match (nodes, selector) {
            (Some(_), Some(_)) => Err(format!(
                "`{kind}` has both `nodes` and `selector`; write one of them"
            )),
            (Some(nodes), None) => {
                let hint = format!(
                    "write node names as a list, like `{kind}: {{nodes: [worker-1, worker-2]}}`"
                );
                let Some(items) = nodes.as_sequence() else {
                    return Err(format!("`{kind}.nodes` is not a list; {hint}"));
                };
                if items.is_empty() {
                    return Err(format!("`{kind}.nodes` is empty; {hint}"));
                }
                let mut names = Vec::new();
                for item in items {
                    let Some(s) = item.as_str() else {
                        return Err(format!("`{kind}.nodes` holds a non-string; {hint}"));
                    };
                    let name =
                        Template::parse(s, params).map_err(|e| format!("`{kind}.nodes`: {e}"))?;
                    // A name with a param is checked once it is known.
                    if !s.contains("{{") {
                        check_name(kind, s)?;
                    }
                    names.push(name);
                }
                Ok(NodeChoice::Names(names))
            }
            (None, Some(selector)) => {
                let Some(text) = selector.as_str() else {
                    return Err(format!(
                        "`{kind}.selector` is not a string; write a label selector, like `{kind}: {{selector: \"role=worker\"}}`"
                    ));
                };
                let template =
                    Template::parse(text, params).map_err(|e| format!("`{kind}.selector`: {e}"))?;
                if !text.contains("{{") {
                    check_selector(kind, "selector", text)?;
                }
                Ok(NodeChoice::Selector(template))
            }
            (None, None) => Ok(NodeChoice::Instance),
        }
    }

    /// The node names, read from the cluster for a selector; `instance` is
    /// the instance the attempt runs for (`global` on the global executor),
    /// `params` the run's.
    pub async fn resolve(
        &self,
        kind: &str,
        instance: &str,
        params: &BTreeMap<String, String>,
        cluster: &Cluster,
    ) -> Result<Vec<String>, String> {
        match self {
            NodeChoice::Instance if instance == kpilot_engine::InstanceId::global().as_str() => {
                Err(format!(
                    "`{kind}: {{}}` acts on the node of a per-node step, and this step runs once (global); name the nodes, like `{kind}: {{nodes: [worker-1]}}` or `{kind}: {{selector: \"role=worker\"}}`, or run the step per node"
                ))
            }
            NodeChoice::Instance => Ok(vec![instance.to_owned()]),
            NodeChoice::Names(names) => names
                .iter()
                .map(|t| {
                    let name = t.render(params);
                    check_name(kind, &name).map(|()| name)
                })
                .collect(),
            NodeChoice::Selector(selector) => {
                let selector = &selector.render(params);
                check_selector(kind, "selector", selector)?;
                let client = cluster.client().await.map_err(|e| e.to_string())?;
                let api: Api<Node> = Api::all(client);
                let list = api
                    .list_metadata(&ListParams::default().labels(selector))
                    .await
                    .map_err(|e| {
                        format!("listing the nodes `{selector}` selects: {}", api_message(&e))
                    })?;
                let mut names: Vec<String> =
                    list.items.into_iter().filter_map(|n| n.metadata.name).collect();
                names.sort();
                if names.is_empty() {
                    return Err(format!(
                        "no node matches the selector `{selector}`; check the nodes' labels (`kubectl get nodes --show-labels`)"
                    ));
                }
                Ok(names)
            }
        }
    }
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if valid_name(name) {
        return Ok(());
    }
    Err(format!(
        "`{kind}.nodes`: `{name}` is not a node name (lower-case letters, digits, `-` and `.`); write node names as a list, like `{kind}: {{nodes: [worker-1, worker-2]}}`"
    ))
}

/// Checks the syntax of the label selector in `kind.field`.
pub fn check_selector(kind: &str, field: &str, text: &str) -> Result<(), String> {
    crate::agent::Selector::parse(text)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "`{kind}.{field}`: {e}; write a label selector, like `{field}: \"role=worker\"`"
            )
        })
}

/// Reads a boolean field of a body.
pub(crate) fn flag(kind: &str, body: &serde_yaml::Mapping, field: &str) -> Result<bool, String> {
    match body.get(field) {
        None => Ok(false),
        Some(serde_yaml::Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!(
            "`{kind}.{field}` is not true or false; write `{field}: true` or leave it out"
        )),
    }
}

/// The body as a mapping; `{}` and an empty body are the same.
pub(crate) fn mapping<'a>(
    kind: &str,
    body: &'a serde_yaml::Value,
    fields: &[&str],
) -> Result<std::borrow::Cow<'a, serde_yaml::Mapping>, String> {
    let map = match body {
        serde_yaml::Value::Mapping(m) => std::borrow::Cow::Borrowed(m),
        serde_yaml::Value::Null => std::borrow::Cow::Owned(serde_yaml::Mapping::new()),
        _ => {
            return Err(format!(
                "`{kind}` is not a mapping; write `{kind}: {{}}` for the step's node, or `{kind}: {{nodes: [NAME]}}`"
            ))
        }
    };
    for key in map.keys() {
        let name = key.as_str().unwrap_or("?");
        if !fields.contains(&name) {
            let known = fields
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let suggestion = kpilot_engine::suggest::nearest(name, fields.iter().copied())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            return Err(format!(
                "`{kind}` has no field `{name}`; {suggestion}its fields are {known}"
            ));
        }
    }
    Ok(map)
}

/// The merge patch that cordons a node and names the run in its annotation,
/// in one write; `resource_version` makes it fail (409) if the node changed
/// since it was read, so a person's cordon in between is never taken over.
pub fn cordon_patch(run: &str, resource_version: Option<&str>) -> Value {
    let mut patch = json!({
        "metadata": {"annotations": {CORDONED_BY: run}},
        "spec": {"unschedulable": true},
    });
    if let Some(rv) = resource_version {
        patch["metadata"]["resourceVersion"] = json!(rv);
    }
    patch
}

/// The merge patch that uncordons a node this run cordoned and removes the
/// annotation, guarded by `resource_version` like [`cordon_patch`].
pub fn uncordon_patch(resource_version: Option<&str>) -> Value {
    let mut patch = json!({
        "metadata": {"annotations": {CORDONED_BY: null}},
        "spec": {"unschedulable": false},
    });
    if let Some(rv) = resource_version {
        patch["metadata"]["resourceVersion"] = json!(rv);
    }
    patch
}

/// Who holds a node's cordon, as read from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cordon {
    /// Schedulable.
    None,
    /// Cordoned by the run asking.
    ThisRun,
    /// Cordoned by someone else: a person, or another run.
    Other,
}

/// Who holds `node`'s cordon, for `run`.
pub fn cordon_of(node: &Node, run: &str) -> Cordon {
    let ours = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CORDONED_BY))
        .is_some_and(|r| r == run);
    let unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    match (ours, unschedulable) {
        (true, _) => Cordon::ThisRun,
        (false, true) => Cordon::Other,
        (false, false) => Cordon::None,
    }
}

/// How a node ended up after [`cordon`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cordoned {
    /// This run cordoned it (now, or before a resume).
    ByThisRun,
    /// It was cordoned already by someone else; left alone.
    Already,
}

/// How many times a patch guarded by a resourceVersion is tried when the
/// node keeps changing under it (its status is written by the kubelet).
const CONFLICT_TRIES: u32 = 5;

/// Cordons `node` for `run`: records it in the ledger first, then one patch
/// sets `unschedulable` and the annotation. A node cordoned by someone else
/// is left alone; one this run cordoned already is not written again.
pub async fn cordon(
    cluster: &Cluster,
    ledger: &kpilot_engine::store::Ledger,
    run: &str,
    step: &str,
    node: &str,
) -> Result<Cordoned, ActionError> {
    let api = nodes(cluster).await?;
    let entry = format!("{CORDONED}{node}");
    for _ in 0..CONFLICT_TRIES {
        let current = api
            .get(node)
            .await
            .map_err(|e| ActionError::api(format!("reading node {node}"), &e))?;
        match cordon_of(&current, run) {
            Cordon::Other => return Ok(Cordoned::Already),
            Cordon::ThisRun if is_unschedulable(&current) => {
                // A resume: the patch went through before the kill; make sure
                // the ledger knows (it was written first, but say it again).
                if ledger.get(&entry).is_none() {
                    ledger
                        .record(&entry, &ledger_entry(step))
                        .await
                        .map_err(ActionError::Ledger)?;
                }
                return Ok(Cordoned::ByThisRun);
            }
            Cordon::ThisRun | Cordon::None => {}
        }
        if ledger.get(&entry).is_none() {
            ledger
                .record(&entry, &ledger_entry(step))
                .await
                .map_err(ActionError::Ledger)?;
        }
        let patch = cordon_patch(run, current.metadata.resource_version.as_deref());
        match api
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(Cordoned::ByThisRun),
            Err(e) if api_code(&e) == Some(409) => continue,
            Err(e) => return Err(ActionError::api(format!("cordoning node {node}"), &e)),
        }
    }
    Err(ActionError::Api {
        what: format!("cordoning node {node}"),
        message: format!("the node changed under {CONFLICT_TRIES} tries in a row"),
    })
}

/// How a node ended up after [`uncordon`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncordoned {
    /// This run had cordoned it; now schedulable again.
    Done,
    /// Cordoned by someone else; left cordoned.
    LeftCordoned,
    /// Schedulable, and not by this run's doing: nothing to do.
    NotCordoned,
    /// The node no longer exists.
    Gone,
}

/// Uncordons `node` if this run cordoned it (its annotation names `run`) and
/// forgets it in the ledger; a node someone else cordoned stays cordoned.
pub async fn uncordon(
    cluster: &Cluster,
    ledger: &kpilot_engine::store::Ledger,
    run: &str,
    node: &str,
) -> Result<Uncordoned, ActionError> {
    let api = nodes(cluster).await?;
    let entry = format!("{CORDONED}{node}");
    for _ in 0..CONFLICT_TRIES {
        let Some(current) = api
            .get_opt(node)
            .await
            .map_err(|e| ActionError::api(format!("reading node {node}"), &e))?
        else {
            ledger.remove(&entry).await.map_err(ActionError::Ledger)?;
            return Ok(Uncordoned::Gone);
        };
        let outcome = match cordon_of(&current, run) {
            Cordon::Other => Uncordoned::LeftCordoned,
            Cordon::None => Uncordoned::NotCordoned,
            Cordon::ThisRun => {
                let patch = uncordon_patch(current.metadata.resource_version.as_deref());
                match api
                    .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => Uncordoned::Done,
                    Err(e) if api_code(&e) == Some(409) => continue,
                    Err(e) => return Err(ActionError::api(format!("uncordoning node {node}"), &e)),
                }
            }
        };
        // The entry goes once the node no longer carries this run's cordon
        // (or never did: the kill came between the ledger and the patch).
        ledger.remove(&entry).await.map_err(ActionError::Ledger)?;
        return Ok(outcome);
    }
    Err(ActionError::Api {
        what: format!("uncordoning node {node}"),
        message: format!("the node changed under {CONFLICT_TRIES} tries in a row"),
    })
}

fn is_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn ledger_entry(step: &str) -> Value {
    json!({"step": step, "at": chrono::Utc::now()})
}

async fn nodes(cluster: &Cluster) -> Result<Api<Node>, ActionError> {
    let client = cluster
        .client()
        .await
        .map_err(|e| ActionError::Connect(e.to_string()))?;
    Ok(Api::all(client))
}

/// A duration written in a body (`30s`, `2m`), in whole seconds.
pub(crate) fn seconds(
    kind: &str,
    field: &str,
    value: &serde_yaml::Value,
) -> Result<Duration, String> {
    let hint = format!("write a duration like `{field}: 30s`");
    let Some(text) = value.as_str() else {
        return Err(format!("`{kind}.{field}` is not a duration; {hint}"));
    };
    humantime::parse_duration(text)
        .map_err(|e| format!("`{kind}.{field}`: `{text}` is not a duration ({e}); {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).expect("yaml")
    }

    #[test]
    fn cordon_patch_sets_unschedulable_and_names_the_run_in_one_write() {
        assert_eq!(
            cordon_patch("r-1", Some("42")),
            json!({
                "metadata": {"annotations": {"kpilot.io/cordoned-by": "r-1"}, "resourceVersion": "42"},
                "spec": {"unschedulable": true},
            })
        );
    }

    #[test]
    fn uncordon_patch_removes_the_annotation() {
        assert_eq!(
            uncordon_patch(None),
            json!({
                "metadata": {"annotations": {"kpilot.io/cordoned-by": null}},
                "spec": {"unschedulable": false},
            })
        );
    }

    #[test]
    fn a_cordon_is_this_runs_only_when_its_annotation_names_the_run() {
        let node = |unschedulable: bool, by: Option<&str>| Node {
            metadata: kube::api::ObjectMeta {
                annotations: by.map(|b| [(CORDONED_BY.to_owned(), b.to_owned())].into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::NodeSpec {
                unschedulable: Some(unschedulable),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(cordon_of(&node(false, None), "r"), Cordon::None);
        assert_eq!(cordon_of(&node(true, None), "r"), Cordon::Other);
        assert_eq!(cordon_of(&node(true, Some("other")), "r"), Cordon::Other);
        assert_eq!(cordon_of(&node(true, Some("r")), "r"), Cordon::ThisRun);
    }

    #[test]
    fn node_choice_reads_names_a_selector_or_the_instance() {
        let m = |t: &str| body(t).as_mapping().cloned().unwrap_or_default();
        let params = ["pool".to_owned()];
        let parse = |t: &str| NodeChoice::parse("cordon", &m(t), &params);
        let t = |s: &str| Template::parse(s, &params).expect("template");
        assert_eq!(parse("{}"), Ok(NodeChoice::Instance));
        assert_eq!(
            parse("{nodes: [a, b]}"),
            Ok(NodeChoice::Names(vec![t("a"), t("b")]))
        );
        assert_eq!(
            parse("{selector: role=worker}"),
            Ok(NodeChoice::Selector(t("role=worker")))
        );
        assert_eq!(
            parse("{selector: \"pool={{params.pool}}\"}"),
            Ok(NodeChoice::Selector(t("pool={{params.pool}}")))
        );
        let both = parse("{selector: a=b, nodes: [a]}").unwrap_err();
        assert!(both.contains("both"), "{both}");
        let bad = parse("{nodes: [Not_A_Name]}").unwrap_err();
        assert!(bad.contains("Not_A_Name"), "{bad}");
        let unknown = parse("{nodes: [\"{{params.nope}}\"]}").unwrap_err();
        assert!(unknown.contains("nope"), "{unknown}");
    }

    #[test]
    fn unknown_fields_are_named_with_a_suggestion() {
        let err = mapping("drain", &body("{forse: true}"), &["force", "nodes"]).unwrap_err();
        assert!(err.contains("`forse`") && err.contains("`force`"), "{err}");
    }
}
