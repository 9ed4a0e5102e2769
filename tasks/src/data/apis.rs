//! `query: {removedApis: {...}}`: objects whose apiVersion an upgrade removes or deprecates,
//! read from manifests, the cluster's last-applied annotations and Helm release Secrets
//! ([`crate::apis`] judges them).
//!
//! ```yaml
//! query:
//!   removedApis:
//!     target: "{{params.to}}"              # required: the release judged against, like 1.16
//!     cluster: "{{params.cluster}}"        # "true" reads the cluster; "false" or "" does not
//!     manifests: "{{params.manifests}}"    # paths, one per line (files or directories)
//!     versions: "{{params.apiVersions}}"   # extra rows: a list of pluto rows, JSON or YAML
//!     annotations: "{{params.annotations}}" # extra annotation keys, comma separated
//!     namespace: ""                        # read the cluster in this namespace only
//! ```
//!
//! The data is a list of findings, `{outcome: failed|warning, message, object: {apiVersion,
//! kind, namespace, name}, source, replacement, removedIn, deprecatedIn}`; objects with nothing
//! to say are not listed.

use std::path::Path;
use std::time::Duration;

use kpilot_engine::TaskContext;
use serde_json::{json, Value};

use super::{cluster::failure, with_retry, Cluster, DataError, Failure};
use crate::apis::cluster::{scan_cluster, ClusterError, ClusterScope};
use crate::apis::{
    classify, parse_target, scan_path_with, ApiError, ApiVersionTable, Finding, ManifestObject,
    Outcome, ScanOptions,
};
use crate::params::Template;

/// The keys `query.removedApis` takes.
const KEYS: [&str; 6] = [
    "target",
    "cluster",
    "manifests",
    "versions",
    "annotations",
    "namespace",
];

/// A parsed `query: {removedApis: {...}}`; every field may use `{{params.NAME}}`.
#[derive(Debug, Clone)]
pub struct RemovedApisQuery {
    target: Template,
    cluster: Option<Template>,
    manifests: Option<Template>,
    versions: Option<Template>,
    annotations: Option<Template>,
    namespace: Option<Template>,
    /// `cluster` written as `true` (or `"true"`), with no param in it.
    always_cluster: bool,
}

/// The query's fields with params filled in.
struct Rendered {
    target: String,
    cluster: String,
    manifests: Vec<String>,
    versions: String,
    annotations: Vec<String>,
    namespace: Option<String>,
}

impl RemovedApisQuery {
    /// Parses the mapping under `removedApis`.
    pub(crate) fn parse(value: &serde_yaml::Value, params: &[String]) -> Result<Self, String> {
        let at = "query.removedApis";
        let hint = "write `query: {removedApis: {target: \"{{params.to}}\", cluster: \"true\", manifests: \"\"}}`";
        let Some(map) = value.as_mapping() else {
            return Err(format!("`{at}` must be a mapping; {hint}"));
        };
        super::check_keys(map, &KEYS, at)?;
        let field = |key: &str| -> Result<Option<Template>, String> {
            match map.get(key) {
                None | Some(serde_yaml::Value::Null) => Ok(None),
                Some(serde_yaml::Value::String(s)) => Template::parse(s, params).map(Some),
                Some(serde_yaml::Value::Bool(b)) if key == "cluster" => {
                    Template::parse(&b.to_string(), params).map(Some)
                }
                Some(serde_yaml::Value::Number(n)) if key == "target" => {
                    Err(format!("`{at}.target` is the number {n}; quote it (\"{n}\"), since 1.20 as a number is 1.2"))
                }
                Some(_) => Err(format!("`{at}.{key}` must be a string")),
            }
        };
        let target = field("target")?.ok_or_else(|| {
            format!("`{at}.target` is missing: the release judged against, like `target: \"{{{{params.to}}}}\"`")
        })?;
        let always_cluster = match map.get("cluster") {
            Some(serde_yaml::Value::Bool(b)) => *b,
            Some(serde_yaml::Value::String(s)) => s.trim() == "true",
            _ => false,
        };
        Ok(RemovedApisQuery {
            always_cluster,
            target,
            cluster: field("cluster")?,
            manifests: field("manifests")?,
            versions: field("versions")?,
            annotations: field("annotations")?,
            namespace: field("namespace")?,
        })
    }

    /// Whether the query always reads the cluster: `cluster` written as `true`, not from a
    /// param (a param decides at run time, so such a query also runs with no cluster).
    pub(crate) fn needs_cluster(&self) -> bool {
        self.always_cluster
    }

    fn render(&self, ctx: &TaskContext) -> Rendered {
        let render = |t: &Option<Template>| {
            t.as_ref()
                .map(|t| t.render(&ctx.params))
                .unwrap_or_default()
        };
        Rendered {
            target: self.target.render(&ctx.params).trim().to_string(),
            cluster: render(&self.cluster).trim().to_string(),
            manifests: render(&self.manifests)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            versions: render(&self.versions),
            annotations: render(&self.annotations)
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
            namespace: Some(render(&self.namespace).trim().to_string()).filter(|n| !n.is_empty()),
        }
    }

    /// The query as a name; the rows' text is named by its size and digest, not spelled out.
    pub(crate) fn key(&self, ctx: &TaskContext) -> String {
        let r = self.render(ctx);
        let mut key = format!("removedApis target={}", r.target);
        let mut opt = |name: &str, value: String| {
            if !value.is_empty() {
                key.push_str(&format!(" {name}={value}"));
            }
        };
        opt("cluster", r.cluster);
        opt("namespace", r.namespace.unwrap_or_default());
        opt("manifests", r.manifests.join(","));
        opt("annotations", r.annotations.join(","));
        if !r.versions.trim().is_empty() {
            let digest = ring::digest::digest(&ring::digest::SHA256, r.versions.as_bytes());
            let hex: String = digest.as_ref()[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            opt("versions", format!("{}B:{hex}", r.versions.len()));
        }
        key
    }

    /// The findings: the manifests' objects in the order of their paths, then the cluster's.
    pub(crate) async fn fetch(
        &self,
        cluster: &Cluster,
        ctx: &TaskContext,
        name: &str,
        budget: Duration,
    ) -> Result<Value, DataError> {
        let r = self.render(ctx);
        let input = |message: String| DataError::Input {
            query: name.to_string(),
            message,
        };
        if r.target.is_empty() {
            return Err(input(
                "target is empty: it needs the release to judge against, like 1.16 (`--to 1.16`)"
                    .to_string(),
            ));
        }
        let target = parse_target(&r.target).map_err(|e| input(e.to_string()))?;
        let read_cluster = match r.cluster.as_str() {
            "true" => true,
            "false" | "" => false,
            other => {
                return Err(input(format!(
                    "cluster is {other:?}; write \"true\" to read the cluster or \"false\" not to"
                )))
            }
        };
        let mut table = ApiVersionTable::builtin().map_err(|e| input(e.to_string()))?;
        if !r.versions.trim().is_empty() {
            let extra = ApiVersionTable::parse_rows(&r.versions, "the extra API-version rows")
                .map_err(|e| input(e.to_string()))?;
            table.merge(extra);
        }
        let options = ScanOptions {
            extra_annotations: r.annotations.clone(),
        };
        let mut objects: Vec<ManifestObject> = Vec::new();
        // Paths that cannot be read are the user's to fix before anything is judged; a
        // document or object that cannot be read is a failed finding of its own, so that one
        // broken release does not hide what every other object says.
        let mut unreadable_paths = Vec::new();
        let mut unjudged = Vec::new();
        let sort = |errors: Vec<ApiError>, paths: &mut Vec<String>, unjudged: &mut Vec<Value>| {
            for e in errors {
                match e {
                    ApiError::Read { .. } => paths.push(e.to_string()),
                    other => unjudged.push(unjudged_json(&other)),
                }
            }
        };
        for path in &r.manifests {
            let scan = scan_path_with(Path::new(path), &options);
            objects.extend(scan.objects);
            sort(scan.errors, &mut unreadable_paths, &mut unjudged);
        }
        if let Some(first) = unreadable_paths.first() {
            let more = match unreadable_paths.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            return Err(input(format!(
                "{first}{more}: give a file or directory that can be read"
            )));
        }
        if read_cluster {
            let scope = ClusterScope {
                namespace: r.namespace.clone(),
                options,
            };
            let table = &table;
            let scope = &scope;
            let scan = with_retry(name, budget, || async move {
                let client = cluster.client().await.map_err(Failure::Permanent)?;
                scan_cluster(&client, table, scope)
                    .await
                    .map_err(|e| request_failure(name, e))
            })
            .await?;
            objects.extend(scan.objects);
            sort(scan.errors, &mut unreadable_paths, &mut unjudged);
        }
        let mut findings: Vec<Value> = classify(&table, &target, &objects)
            .iter()
            .map(finding_json)
            .collect();
        findings.extend(unjudged);
        Ok(Value::Array(findings))
    }
}

/// A document or object that could not be read, as a failed finding: its API cannot be judged.
fn unjudged_json(e: &ApiError) -> Value {
    let (object, source, problem) = match e {
        ApiError::Object {
            object,
            origin,
            problem,
        } => (
            json!({
                "apiVersion": object.api_version,
                "kind": object.kind,
                "namespace": object.namespace,
                "name": object.name,
            }),
            origin.clone(),
            format!("{object}: {problem}"),
        ),
        ApiError::Document {
            file,
            document,
            problem,
        } => (
            Value::Null,
            file.display().to_string(),
            format!("document {document}: {problem}"),
        ),
        other => (Value::Null, String::new(), other.to_string()),
    };
    json!({
        "outcome": "failed",
        "message": format!("{problem}; its API versions cannot be judged: fix it or remove it"),
        "object": object,
        "source": source,
        "replacement": null,
        "removedIn": null,
        "deprecatedIn": null,
    })
}

/// A failed request, sorted as the other cluster queries sort theirs, saying what it was for.
fn request_failure(name: &str, e: ClusterError) -> Failure {
    match failure(name, e.source) {
        Failure::Transient(m) => Failure::Transient(format!("{}: {m}", e.what)),
        Failure::Permanent(DataError::Api { query, message }) => {
            Failure::Permanent(DataError::Api {
                query,
                message: format!("{}: {message}", e.what),
            })
        }
        Failure::Permanent(other) => Failure::Permanent(other),
    }
}

/// A finding as checks see it.
pub fn finding_json(f: &Finding) -> Value {
    json!({
        "outcome": match f.outcome {
            Outcome::Failed => "failed",
            Outcome::Warning => "warning",
        },
        "message": f.message,
        "object": {
            "apiVersion": f.object.api_version,
            "kind": f.object.kind,
            "namespace": f.object.namespace,
            "name": f.object.name,
        },
        "source": f.source,
        "replacement": f.replacement,
        "removedIn": f.removed_in,
        "deprecatedIn": f.deprecated_in,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use kpilot_engine::store::Facts;
    use kpilot_engine::{InstanceId, RunId, StepId};

    use super::*;
    use crate::data::{ClusterConfig, Query};

    const PARAMS: [&str; 5] = ["to", "cluster", "manifests", "apiVersions", "annotations"];

    fn parse(yaml: &str) -> Result<Query, String> {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        let params: Vec<String> = PARAMS.iter().map(|p| p.to_string()).collect();
        Query::parse(&value, &params)
    }

    fn ctx(params: &[(&str, &str)]) -> TaskContext {
        let run = RunId::parse("r1").expect("run id");
        TaskContext {
            run_id: run.clone(),
            step_id: StepId::parse("c").expect("step id"),
            instance: InstanceId::global(),
            attempt: 1,
            params: Arc::new(
                params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            workdir: std::env::temp_dir(),
            facts: Facts::in_memory(run.clone()),
            ledger: kpilot_engine::store::Ledger::in_memory(run),
            retried: false,
        }
    }

    /// A cluster that cannot be reached: a query that reads it fails, one that does not never
    /// connects.
    fn nowhere() -> Cluster {
        Cluster::new(ClusterConfig {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            context: None,
        })
    }

    const FULL: &str = "{removedApis: {target: '{{params.to}}', cluster: '{{params.cluster}}', manifests: '{{params.manifests}}', versions: '{{params.apiVersions}}', annotations: '{{params.annotations}}'}}";

    async fn fetch(params: &[(&str, &str)]) -> Result<Value, DataError> {
        let q = parse(FULL).expect("parses");
        let cluster = nowhere();
        let ctx = ctx(params);
        let name = q.key(&ctx);
        let Query::RemovedApis(q) = q else {
            panic!("not removedApis");
        };
        let data = q.fetch(&cluster, &ctx, &name, Duration::from_secs(1)).await;
        assert!(!cluster.connected(), "connected without cluster: true");
        data
    }

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    const OLD_DEPLOYMENT: &str = "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n---\napiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: front, namespace: shop}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: fine}\n";

    #[test]
    fn the_query_form_and_its_mistakes() {
        let q = parse(FULL).expect("parses");
        assert!(matches!(q, Query::RemovedApis(_)));
        // A param decides at run time, so the query does not need a cluster.
        assert!(!q.needs_cluster());
        assert!(parse("{removedApis: {target: '1.16', cluster: true}}")
            .expect("parses")
            .needs_cluster());
        assert!(parse("{removedApis: {target: '1.16', cluster: 'true'}}")
            .expect("parses")
            .needs_cluster());
        for (bad, says) in [
            ("{removedApis: {cluster: 'true'}}", "`query.removedApis.target` is missing"),
            ("{removedApis: {target: 1.20}}", "quote it"),
            ("{removedApis: {target: '1.16', manifest: x}}", "unknown key String(\"manifest\") in `query.removedApis`; it takes target, cluster, manifests"),
            ("{removedApis: {target: '1.16', manifests: [a, b]}}", "`query.removedApis.manifests` must be a string"),
            ("{removedApis: {target: '{{params.nope}}'}}", "`nope`"),
            ("{removedApis: '1.16'}", "must be a mapping"),
            ("{removedApis: {target: '1.16'}, cluster: nodes}", "unknown key"),
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_key_names_every_input_and_digests_the_rows() {
        let q = parse(FULL).expect("parses");
        let key = q.key(&ctx(&[
            ("to", "1.16"),
            ("cluster", "true"),
            ("manifests", "a.yaml\n\n dir \n"),
            ("apiVersions", "[{version: x/v1, kind: X}]"),
            ("annotations", "kapp.k14s.io/original, b"),
        ]));
        assert!(
            key.starts_with(
                "removedApis target=1.16 cluster=true manifests=a.yaml,dir annotations=kapp.k14s.io/original,b versions=26B:"
            ),
            "{key}"
        );
        let other = q.key(&ctx(&[
            ("to", "1.16"),
            ("cluster", "true"),
            ("manifests", "a.yaml\ndir"),
            ("apiVersions", "[{version: y/v1, kind: X}]"),
            ("annotations", "kapp.k14s.io/original,b"),
        ]));
        assert_ne!(key, other, "different rows, same key");
        assert_eq!(q.key(&ctx(&[("to", "1.22")])), "removedApis target=1.22");
    }

    #[tokio::test]
    async fn findings_from_manifests_with_no_cluster() {
        let dir = dir_with(&[("app.yaml", OLD_DEPLOYMENT)]);
        let path = dir.path().display().to_string();
        let data = fetch(&[("to", "1.16"), ("cluster", "false"), ("manifests", &path)])
            .await
            .expect("data");
        let file = dir.path().join("app.yaml").display().to_string();
        assert_eq!(
            data,
            json!([
                {
                    "outcome": "failed",
                    "message": "Deployment shop/web uses extensions/v1beta1, removed in v1.16.0; use apps/v1",
                    "object": {"apiVersion": "extensions/v1beta1", "kind": "Deployment", "namespace": "shop", "name": "web"},
                    "source": file,
                    "replacement": "apps/v1",
                    "removedIn": "v1.16.0",
                    "deprecatedIn": "v1.9.0",
                },
                {
                    "outcome": "warning",
                    "message": "Ingress shop/front uses extensions/v1beta1, deprecated in v1.14.0, removed in v1.22.0; use networking.k8s.io/v1",
                    "object": {"apiVersion": "extensions/v1beta1", "kind": "Ingress", "namespace": "shop", "name": "front"},
                    "source": file,
                    "replacement": "networking.k8s.io/v1",
                    "removedIn": "v1.22.0",
                    "deprecatedIn": "v1.14.0",
                },
            ])
        );
        // Nothing at all before the deprecation.
        let data = fetch(&[("to", "1.8"), ("manifests", &path)])
            .await
            .expect("data");
        assert_eq!(data, json!([]));
    }

    #[tokio::test]
    async fn extra_rows_as_a_list_or_a_table_in_json_or_yaml() {
        let dir = dir_with(&[(
            "issuer.yaml",
            "apiVersion: certmanager.k8s.io/v1alpha1\nkind: Issuer\nmetadata: {name: ca, namespace: certs}\n",
        )]);
        let path = dir.path().display().to_string();
        let row = r#"{"version": "certmanager.k8s.io/v1alpha1", "kind": "Issuer", "deprecated-in": "v1.0.0", "removed-in": "v1.16.0", "replacement-api": "cert-manager.io/v1", "component": "cert-manager"}"#;
        for rows in [
            format!("[{row}]"),
            format!("{{\"deprecated-versions\": [{row}]}}"),
            "- version: certmanager.k8s.io/v1alpha1\n  kind: Issuer\n  deprecated-in: v1.0.0\n  removed-in: v1.16.0\n  replacement-api: cert-manager.io/v1\n".to_string(),
        ] {
            let data = fetch(&[("to", "1.16"), ("manifests", &path), ("apiVersions", &rows)])
                .await
                .expect("data");
            assert_eq!(data.as_array().map(Vec::len), Some(1), "{rows}: {data}");
            assert_eq!(data[0]["outcome"], "failed");
            assert_eq!(data[0]["replacement"], "cert-manager.io/v1");
            assert_eq!(data[0]["object"]["name"], "ca");
        }
        // Without the rows the object is unknown, so nothing is said.
        let data = fetch(&[("to", "1.16"), ("manifests", &path)])
            .await
            .expect("data");
        assert_eq!(data, json!([]));
    }

    #[tokio::test]
    async fn an_extra_annotation_is_read_after_last_applied() {
        let dir = dir_with(&[(
            "served.yaml",
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\n  namespace: ops\n  annotations:\n    kapp.k14s.io/original: '{\"apiVersion\": \"extensions/v1beta1\", \"kind\": \"DaemonSet\"}'\n",
        )]);
        let path = dir.path().display().to_string();
        let data = fetch(&[("to", "1.16"), ("manifests", &path)])
            .await
            .expect("data");
        assert_eq!(data, json!([]), "read an annotation nobody named");
        let data = fetch(&[
            ("to", "1.16"),
            ("manifests", &path),
            ("annotations", "kapp.k14s.io/original"),
        ])
        .await
        .expect("data");
        assert_eq!(data[0]["object"]["apiVersion"], "extensions/v1beta1");
        assert_eq!(data[0]["outcome"], "failed");
    }

    #[tokio::test]
    async fn bad_inputs_name_what_to_fix() {
        for (params, says) in [
            (vec![("cluster", "false")], "target is empty"),
            (vec![("to", "one-sixteen")], "write it as 1.16"),
            (
                vec![("to", "1.16"), ("cluster", "yes")],
                "cluster is \"yes\"; write \"true\"",
            ),
            (
                vec![("to", "1.16"), ("manifests", "/nonexistent/manifests")],
                "/nonexistent/manifests: cannot read: No such file or directory (os error 2): give a file or directory that can be read",
            ),
            (
                vec![
                    ("to", "1.16"),
                    ("apiVersions", "[{version: x/v1, removed-in: soon}]"),
                ],
                "the extra API-version rows: row 1 (x/v1 ): removed-in \"soon\" is not a release",
            ),
            (
                vec![("to", "1.16"), ("apiVersions", "{rows: []}")],
                "the extra API-version rows: not a table of API versions",
            ),
        ] {
            let err = fetch(&params).await.expect_err(says);
            assert!(matches!(err, DataError::Input { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.starts_with("removedApis target="), "{text}");
            assert!(text.contains(says), "{params:?}: {text}");
        }
    }

    #[tokio::test]
    async fn a_document_that_cannot_be_read_is_a_failed_finding_of_its_own() {
        let dir = dir_with(&[
            ("a-broken.yaml", "apiVersion: v1\nkind: [\n"),
            ("b-app.yaml", OLD_DEPLOYMENT),
        ]);
        let path = dir.path().display().to_string();
        let data = fetch(&[("to", "1.16"), ("manifests", &path)])
            .await
            .expect("data");
        let found = data.as_array().expect("a list");
        // The other file is still judged; the broken document comes after the findings.
        assert_eq!(found.len(), 3, "{data}");
        assert_eq!(found[0]["object"]["name"], "web");
        assert_eq!(found[1]["object"]["name"], "front");
        let broken = &found[2];
        assert_eq!(broken["outcome"], "failed");
        assert_eq!(broken["object"], Value::Null);
        assert_eq!(
            broken["source"],
            dir.path().join("a-broken.yaml").display().to_string()
        );
        let message = broken["message"].as_str().expect("message");
        assert!(
            message.starts_with("document 1: not YAML or JSON: ")
                && message.ends_with("; its API versions cannot be judged: fix it or remove it"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn reading_the_cluster_needs_one() {
        let q = parse(FULL).expect("parses");
        let cluster = nowhere();
        let ctx = ctx(&[("to", "1.16"), ("cluster", "true")]);
        let name = q.key(&ctx);
        let err = q
            .fetch(&cluster, &ctx, Duration::from_secs(1))
            .await
            .expect_err("no cluster");
        assert!(
            err.to_string().contains("/nonexistent/kubeconfig"),
            "{err} ({name})"
        );
    }

    /// The catalog's two checks, as check bodies with the run's params: with no cluster and a
    /// manifest directory, `removed-apis` fails the Deployment and `deprecated-apis` warns of
    /// the Ingress, each message naming source, object, apiVersion, release and replacement.
    #[tokio::test]
    async fn the_catalog_checks_judge_manifests() {
        use kpilot_engine::{ParseContext, TaskKind as _};
        use serde::Deserialize as _;

        let text = include_str!("../../../workflows/catalog/workloads-apis.yaml");
        let dir = dir_with(&[("app.yaml", OLD_DEPLOYMENT)]);
        let file = dir.path().join("app.yaml").display().to_string();
        let params: Vec<String> = [
            "to",
            "from",
            "cluster",
            "manifests",
            "apiVersions",
            "annotations",
            "namespace",
        ]
        .iter()
        .map(|p| p.to_string())
        .collect();
        let kind = crate::task::check::CheckKind::new(Arc::new(nowhere()));
        let mut outputs = BTreeMap::new();
        for doc in serde_yaml::Deserializer::from_str(text) {
            let doc = serde_yaml::Value::deserialize(doc).expect("YAML");
            let name = doc["metadata"]["name"].as_str().expect("name").to_string();
            assert_eq!(doc["kind"], "Check", "{name}");
            assert_eq!(doc["category"], "workloads/apis", "{name}");
            assert_eq!(
                doc["remediation"]["url"],
                "https://kubernetes.io/docs/reference/using-api/deprecation-guide/"
            );
            let task = kind
                .parse(
                    &doc["check"],
                    &ParseContext {
                        step_id: &name,
                        params: &params,
                    },
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let ctx = ctx(&[
                ("to", "1.16"),
                ("cluster", "false"),
                ("manifests", dir.path().to_str().expect("utf-8")),
                ("namespace", ""),
            ]);
            outputs.insert(name, task.run(&ctx).await);
        }
        let removed = &outputs["removed-apis"];
        let out = removed.output.as_ref().expect("output");
        assert_eq!(out["outcome"], "failed", "{out}");
        assert_eq!(
            out["items"][0]["message"],
            format!("{file}: Deployment shop/web uses extensions/v1beta1, removed in v1.16.0; use apps/v1")
        );
        assert_eq!(out["items"].as_array().map(Vec::len), Some(1));
        let deprecated = &outputs["deprecated-apis"];
        let out = deprecated.output.as_ref().expect("output");
        assert_eq!(out["outcome"], "warning", "{out}");
        assert_eq!(
            out["items"][0]["message"],
            format!("{file}: Ingress shop/front uses extensions/v1beta1, deprecated in v1.14.0, removed in v1.22.0; use networking.k8s.io/v1")
        );
        assert_eq!(out["items"].as_array().map(Vec::len), Some(1));
    }
}
