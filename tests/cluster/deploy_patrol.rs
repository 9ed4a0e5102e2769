//! `deploy/patrol/`: the patrol's manifests are objects the API server accepts, wired to one
//! another; its ClusterRole grants what the catalog's patrol checks read and nothing else, and
//! is enough to run the shipped example Report as its service account; the ConfigMap carries
//! the example files of `workflows/patrol/`; the systemd unit passes `systemd-analyze`.
//!
//! The manifests are rendered with kubectl's own kustomize into a namespace of the test's, with
//! a suffix of the test's on every name, so that the cluster-scoped ClusterRole and its binding
//! are the test's too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::{kp_with, kubeconfig, kubectl, kubectl_path, root, unique};
use crate::util::prereq::{needs, Need};
use crate::util::Dir;

/// The CRD the ServiceMonitor needs: monitoring.coreos.com's, cut down to what the manifest
/// uses (the rest of the object is kept as written). Cluster-scoped, so it has no namespace.
fn service_monitor_crd() -> Value {
    let any = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "plural": "servicemonitors",
                "singular": "servicemonitor",
                "kind": "ServiceMonitor",
                "listKind": "ServiceMonitorList",
            },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["selector", "endpoints"],
                        "x-kubernetes-preserve-unknown-fields": true,
                        "properties": {
                            "selector": any,
                            "endpoints": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": true,
                                    "properties": {
                                        "port": {"type": "string"},
                                        "path": {"type": "string"},
                                        "interval": {"type": "string"},
                                        "scrapeTimeout": {"type": "string"},
                                    },
                                },
                            },
                        },
                    }},
                }},
            }],
        },
    })
}

/// What a test made on the cluster, deleted when it ends (passing or not): its namespace,
/// its cluster-scoped objects, and the CRD when the test was the one that made it.
#[derive(Default)]
struct Cleanup {
    namespace: Option<String>,
    cluster_scoped: Vec<(String, String)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            let _ = Command::new(kubectl_path())
                .arg("--kubeconfig")
                .arg(kubeconfig())
                .args(args)
                .args(["--ignore-not-found", "--wait=false"])
                .output();
        };
        for (kind, name) in &self.cluster_scoped {
            run(&["delete", kind, name]);
        }
        if let Some(ns) = &self.namespace {
            run(&["delete", "namespace", ns]);
        }
    }
}

/// `deploy/patrol/` as kubectl's kustomize renders it into namespace `ns`, every name ending
/// in `-ns`: the objects in order.
fn render(dir: &Dir, ns: &str) -> Vec<Value> {
    let overlay = dir.join("overlay");
    // kustomize takes a base only by a relative path.
    let base = Path::new("../".repeat(depth(&overlay)).as_str()).join(
        root()
            .join("deploy/patrol")
            .strip_prefix("/")
            .expect("an absolute root"),
    );
    dir.write(
        "overlay/kustomization.yaml",
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             namespace: {ns}\nnameSuffix: -{ns}\nresources:\n  - {}\n",
            base.display()
        ),
    );
    let text = kubectl(&["kustomize", &overlay.display().to_string()], None);
    yaml_documents(&text)
}

/// How many directories deep `path` is below `/`.
fn depth(path: &Path) -> usize {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("kustomize writes YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The one object of `kind` among `objects`.
#[track_caller]
fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in {objects:#?}");
    found[0]
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().expect("a name")
}

/// Creates the ServiceMonitor CRD unless the cluster has one (a real Prometheus Operator's is
/// left alone), and waits until it is served.
fn ensure_service_monitor_crd(cleanup: &mut Cleanup) {
    let crd = service_monitor_crd();
    let crd_name = name(&crd).to_owned();
    let there = kubectl(
        &["get", "crd", "--ignore-not-found", "-o", "name", &crd_name],
        None,
    );
    if there.trim().is_empty() {
        cleanup
            .cluster_scoped
            .push(("customresourcedefinition".into(), crd_name.clone()));
        kubectl(&["create", "-f", "-"], Some(&crd.to_string()));
    }
    kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{crd_name}"),
        ],
        None,
    );
}

kptest!(patrol_manifests_are_accepted_by_the_api_server, |dir| {
    let ns = unique("deploy");
    let mut cleanup = Cleanup::default();
    let objects = render(&dir, &ns);
    let kinds: BTreeSet<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().expect("a kind"))
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "PersistentVolumeClaim",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]),
        "the objects of deploy/patrol/"
    );
    assert_eq!(objects.len(), kinds.len(), "one object of each kind");

    kubectl(&["create", "namespace", &ns], None);
    cleanup.namespace = Some(ns.clone());
    ensure_service_monitor_crd(&mut cleanup);

    // A discovery cache of the test's own: kubectl must see the CRD just made.
    let cache = format!("--cache-dir={}", dir.join("kube-cache").display());
    let manifests = dir.write(
        "rendered.json",
        &json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string(),
    );
    let accepted: Value = serde_json::from_str(&kubectl(
        &[
            &cache,
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            &manifests.display().to_string(),
        ],
        None,
    ))
    .expect("kubectl prints JSON");
    let accepted: Vec<Value> = match accepted["kind"].as_str() {
        Some("List") => accepted["items"].as_array().expect("items").clone(),
        _ => vec![accepted],
    };
    let key = |o: &Value| (o["kind"].as_str().map(str::to_owned), name(o).to_owned());
    let sent: BTreeSet<_> = objects.iter().map(key).collect();
    let got: BTreeSet<_> = accepted.iter().map(key).collect();
    assert_eq!(got, sent, "the API server accepted every object");
    for o in &accepted {
        // What the server would store: it defaulted and validated each one.
        assert!(
            o["metadata"]["creationTimestamp"].is_string(),
            "not admitted: {o:#}"
        );
    }

    // The objects are wired to one another, as the server would keep them.
    let deployment = one(&accepted, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(
        container["args"],
        json!([
            "patrol",
            "/etc/kpilot/patrol.yaml",
            "--listen",
            "0.0.0.0:9464",
            "--state-dir",
            "/var/lib/kpilot"
        ])
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["path"], "/metrics",
            "{probe}: {container:#}"
        );
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert!(container["resources"]["requests"].is_object());
    assert_eq!(
        pod["serviceAccountName"],
        name(one(&accepted, "ServiceAccount"))
    );
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("a volume name"), v))
        .collect();
    assert_eq!(
        volumes["state"]["persistentVolumeClaim"]["claimName"],
        name(one(&accepted, "PersistentVolumeClaim"))
    );
    assert_eq!(
        volumes["config"]["configMap"]["name"],
        name(one(&accepted, "ConfigMap"))
    );
    let mounts: BTreeMap<&str, &str> = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(mounts["config"], "/etc/kpilot");
    assert_eq!(mounts["state"], "/var/lib/kpilot");

    let binding = one(&accepted, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"]["name"],
        name(one(&accepted, "ClusterRole"))
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": ns}])
    );

    let service = one(&accepted, "Service");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_object().expect("a selector") {
        assert_eq!(&labels[k], v, "the Service selects the patrol's pod");
    }
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(container["ports"][0]["name"], "metrics");
    let monitor = one(&accepted, "ServiceMonitor");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the Service"
        );
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
});

kptest!(patrol_configmap_carries_the_example_files, |dir| {
    let objects = render(&dir, &unique("deploy"));
    let data = &one(&objects, "ConfigMap")["data"];
    let examples = root().join("workflows/patrol");
    let mut keys: Vec<&str> = data
        .as_object()
        .expect("data")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["patrol.yaml", "report.yaml"]);
    for file in keys {
        let shipped = std::fs::read_to_string(examples.join(file)).expect("the example file");
        assert_eq!(
            data[file].as_str(),
            Some(shipped.as_str()),
            "deploy/patrol/config/{file} is not the text of workflows/patrol/{file}: copy it"
        );
    }
    // The Patrol file names the Report beside it, which the ConfigMap mounts with it.
    let patrol: serde_yaml::Value =
        serde_yaml::from_str(data["patrol.yaml"].as_str().unwrap()).expect("YAML");
    assert_eq!(patrol["kind"].as_str(), Some("Patrol"));
    for schedule in patrol["spec"]["schedules"]
        .as_sequence()
        .expect("schedules")
    {
        assert_eq!(schedule["report"].as_str(), Some("report.yaml"));
    }
});

/// The objects a cluster query reads, as `(apiGroup, resource)`: how tasks/src/data/cluster.rs
/// answers each `query: cluster.*`, and for `query: {resource: ...}` the resource the API
/// server serves the kind as.
fn reads(query: &Value, served: &mut Served) -> Vec<(String, String)> {
    let pair = |g: &str, r: &str| (g.to_owned(), r.to_owned());
    if let Some(r) = query.get("resource") {
        let group = r["group"].as_str().unwrap_or_default();
        let group = if group == "core" { "" } else { group };
        let version = r["version"].as_str().expect("a version");
        let kind = r["kind"].as_str().expect("a kind");
        return vec![(group.to_owned(), served.resource(group, version, kind))];
    }
    let path = match query {
        Value::String(p) => p.trim().to_owned(),
        _ => match query.get("cluster").and_then(Value::as_str) {
            Some(c) => format!("cluster.{c}"),
            // A command, node.*, removedApis: not the API (removedApis is no patrol's).
            None => return Vec::new(),
        },
    };
    match path.as_str() {
        "cluster.nodes" => vec![pair("", "nodes")],
        "cluster.addons" => vec![pair("apps", "daemonsets"), pair("apps", "deployments")],
        "cluster.services" => vec![
            pair("", "services"),
            pair("discovery.k8s.io", "endpointslices"),
        ],
        "cluster.webhooks" => vec![
            pair(
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
            ),
            pair(
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
            ),
            pair("", "services"),
            pair("discovery.k8s.io", "endpointslices"),
        ],
        // /version, /api, /apis: non-resource URLs; a TLS handshake.
        "cluster.version" | "cluster.apis" | "cluster.servingCertificate" => Vec::new(),
        p if p.starts_with("node.") => Vec::new(),
        other => panic!("a cluster query this test does not know: {other}; add what it reads"),
    }
}

/// The resources the test cluster serves, by group/version, from its discovery documents.
#[derive(Default)]
struct Served(BTreeMap<String, Value>);

impl Served {
    fn resource(&mut self, group: &str, version: &str, kind: &str) -> String {
        let gv = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let list = self
            .0
            .entry(gv.clone())
            .or_insert_with(|| {
                serde_json::from_str(&kubectl(&["get", "--raw", &gv], None)).expect("JSON")
            })
            .clone();
        list["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["kind"] == kind && !r["name"].as_str().unwrap_or("/").contains('/'))
            .and_then(|r| r["name"].as_str())
            .unwrap_or_else(|| panic!("{gv} serves no {kind}"))
            .to_owned()
    }
}

kptest!(
    patrol_role_grants_reading_what_the_catalog_reads_and_nothing_else,
    |dir| {
        // What the patrol checks read: the workflows `kpilot inspect --scenario patrol` runs, for
        // each cluster type (which chooses among the checks), with every check of the catalog.
        let mut needed: BTreeSet<(String, String)> = BTreeSet::new();
        let mut served = Served::default();
        for cluster_type in ["managed", "self-hosted", "serverless", "edge", "gpu"] {
            let ran = kp_with(
                &dir,
                &[
                    "inspect",
                    "--scenario",
                    "patrol",
                    "--cluster-type",
                    cluster_type,
                    "--dry-run",
                    "-o",
                    "json",
                ],
                kubeconfig(),
            )
            .expect(0);
            let workflow: Value = serde_json::from_str(&ran.stdout).expect("a JSON workflow");
            for step in workflow["spec"]["steps"].as_array().expect("steps") {
                if let Some(query) = step["check"].get("query") {
                    needed.extend(reads(query, &mut served));
                }
            }
        }
        assert!(needed.contains(&("".into(), "pods".into())), "{needed:?}");

        let objects = render(&dir, &unique("deploy"));
        let role = one(&objects, "ClusterRole");
        let mut granted: BTreeSet<(String, String)> = BTreeSet::new();
        for rule in role["rules"].as_array().expect("rules") {
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .expect("verbs")
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            if rule.get("nonResourceURLs").is_some() {
                assert_eq!(verbs, ["get"], "{rule:#}");
                continue;
            }
            assert_eq!(verbs, ["get", "list"], "only get and list: {rule:#}");
            for group in rule["apiGroups"].as_array().expect("apiGroups") {
                for resource in rule["resources"].as_array().expect("resources") {
                    let (g, r) = (group.as_str().unwrap(), resource.as_str().unwrap());
                    assert!(g != "*" && r != "*" && !r.contains('/'), "{rule:#}");
                    granted.insert((g.to_owned(), r.to_owned()));
                }
            }
            assert!(rule.get("resourceNames").is_none(), "{rule:#}");
        }
        let missing: Vec<_> = needed.difference(&granted).collect();
        let extra: Vec<_> = granted.difference(&needed).collect();
        assert!(
        missing.is_empty() && extra.is_empty(),
        "deploy/patrol/rbac.yaml: not granted though read: {missing:?}; granted though never read: {extra:?}"
    );
    }
);

/// The admin kubeconfig, acting as `user` (the API server impersonates it).
fn acting_as(dir: &Dir, user: &str) -> PathBuf {
    let mut config: Value = serde_json::from_str(&kubectl(
        &["config", "view", "--raw", "--flatten", "-o", "json"],
        None,
    ))
    .expect("JSON");
    for u in config["users"].as_array_mut().expect("users") {
        u["user"]["as"] = json!(user);
    }
    dir.write_secret(
        &format!("{}.kubeconfig", user.replace(':', "-")),
        &config.to_string(),
    )
}

/// The outcome of each check of a JSON report.
fn outcomes(report: &str) -> BTreeMap<String, (String, String)> {
    let report: Value = serde_json::from_str(report).expect("a JSON report");
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                (
                    c["outcome"].as_str().unwrap().to_owned(),
                    c["message"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

kptest!(patrol_service_account_can_run_the_example_report, |dir| {
    let ns = unique("deploy");
    let mut cleanup = Cleanup::default();
    let objects = render(&dir, &ns);
    kubectl(&["create", "namespace", &ns], None);
    cleanup.namespace = Some(ns.clone());
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"] {
        let object = one(&objects, kind);
        if kind != "ServiceAccount" {
            cleanup
                .cluster_scoped
                .push((kind.to_lowercase(), name(object).to_owned()));
        }
        kubectl(&["create", "-f", "-"], Some(&object.to_string()));
    }
    let account = name(one(&objects, "ServiceAccount"));
    let report = root().join("workflows/patrol/report.yaml");
    let inspect = |kubeconfig: &Path| {
        kp_with(
            &dir,
            &[
                "inspect",
                "--scenario",
                "patrol",
                "--report",
                &report.display().to_string(),
                "-o",
                "json",
            ],
            kubeconfig,
        )
    };

    // As the patrol's service account, every check of the example Report reads its data: some
    // may find problems on the test cluster (exit 1), none is left unable to check.
    let ran = inspect(&acting_as(
        &dir,
        &format!("system:serviceaccount:{ns}:{account}"),
    ));
    assert!(
        ran.code == 0 || ran.code == 1,
        "exit {}\n{}\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
    let checks = outcomes(&ran.stdout);
    assert!(checks.len() > 10, "{checks:#?}");
    let errors: Vec<_> = checks.iter().filter(|(_, (o, _))| o == "error").collect();
    assert!(
        errors.is_empty(),
        "could not check as {account}: {errors:#?}"
    );

    // The control: an account the ClusterRole is not bound to reads nothing.
    let ran = inspect(&acting_as(
        &dir,
        &format!("system:serviceaccount:{ns}:not-{account}"),
    ));
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    assert!(ran.stderr.contains("403 Forbidden"), "{}", ran.stderr);
});

kptest!(patrol_systemd_unit_verifies, |dir| {
    if !needs(
        "patrol_systemd_unit_verifies",
        &[Need::Program(
            "systemd-analyze",
            "Debian's systemd package: scripts/install-deps",
        )],
    ) {
        return;
    }
    let unit = std::fs::read_to_string(root().join("deploy/patrol/kpilot-patrol.service"))
        .expect("the unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/kpilot patrol /etc/kpilot/patrol.yaml "));
    // verify checks that ExecStart's program exists: point it at the kpilot under test.
    let here = dir.write(
        "kpilot-patrol.service",
        &unit.replace("/usr/local/bin/kpilot", env!("CARGO_BIN_EXE_kpilot")),
    );
    let analyze = |args: &[&str]| {
        let out = Command::new("systemd-analyze")
            .args(args)
            .arg(&here)
            .output()
            .expect("systemd-analyze runs");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // An unknown or misspelt option is only a warning: no output at all is the pass.
    let (ok, said) = analyze(&["verify", "--man=no"]);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // The hardening holds: systemd's exposure score at most 2.0 of 10 ("OK").
    let (ok, said) = analyze(&["security", "--offline=true", "--threshold=20"]);
    assert!(ok, "systemd-analyze security: {said}");
});
