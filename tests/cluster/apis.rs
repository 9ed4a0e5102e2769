//! Removed and deprecated APIs read from the cluster: objects' last-applied annotations and
//! Helm 3 release Secrets, created on the test cluster in a namespace of the test's own.

use std::io::Write as _;

use base64::Engine as _;
use serde_json::json;

use super::{kp, kubectl, step_output, unique, Created};
use crate::util::Dir;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A workflow with the two checks the catalog ships, scoped to `params.ns`; each finding's
/// message carries its fields, `|`-separated, so that a test can read them back.
const WORKFLOW: &str = r#"apiVersion: kpilot/v1
kind: Workflow
metadata: {name: apis}
spec:
  params:
    - {name: ns}
    - {name: to, default: "1.16"}
    - {name: annotations, default: ""}
  steps:
    - id: removed
      phase: pre-check
      check:
        query: {removedApis: {target: "{{params.to}}", cluster: "true", namespace: "{{params.ns}}", annotations: "{{params.annotations}}"}}
        forEach: true
        expect: item.outcome != 'failed'
        message: "{{item.outcome}}|{{item.object.apiVersion}}|{{item.object.kind}}|{{item.object.namespace}}|{{item.object.name}}|{{item.source}}|{{item.replacement}}|{{item.removedIn}}"
    - id: deprecated
      phase: pre-check
      check:
        query: {removedApis: {target: "{{params.to}}", cluster: "true", namespace: "{{params.ns}}", annotations: "{{params.annotations}}"}}
        forEach: true
        severity: warning
        expect: item.outcome != 'warning'
        message: "{{item.outcome}}|{{item.object.apiVersion}}|{{item.object.kind}}|{{item.object.namespace}}|{{item.object.name}}|{{item.source}}|{{item.replacement}}|{{item.removedIn}}"
"#;

/// The findings a step reported, each as its `|`-separated fields, sorted.
fn findings(dir: &Dir, run: &str, step: &str) -> Vec<Vec<String>> {
    let output = step_output(dir, run, step);
    let mut found: Vec<Vec<String>> = output["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{step} has no items: {output}"))
        .iter()
        .map(|i| {
            i["message"]
                .as_str()
                .expect("message")
                .split('|')
                .map(str::to_owned)
                .collect()
        })
        .collect();
    found.sort();
    found
}

fn row(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

/// Runs the workflow against namespace `ns`, expecting exit `code`.
fn run(dir: &Dir, run_id: &str, ns: &str, extra: &[&str], code: i32) {
    let ns = format!("ns={ns}");
    let mut args = vec!["run", "wf.yaml", "--run-id", run_id, "--param", &ns];
    args.extend(extra);
    kp(dir, &args).expect(code);
}

fn namespace(created: &mut Created, tag: &str) -> String {
    let ns = unique(tag);
    created.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    ns
}

/// Sets an object's annotation as `kubectl apply` would have left it. (`kubectl create`
/// rewrites an existing last-applied annotation, so it is set after.)
fn annotate(kind: &str, ns: &str, name: &str, key: &str, applied: serde_json::Value) {
    kubectl(
        &[
            "annotate",
            "-n",
            ns,
            kind,
            name,
            "--overwrite",
            &format!("{key}={applied}"),
        ],
        None,
    );
}

fn deployment(ns: &str, name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            },
        },
    })
}

fn applied(api_version: &str, kind: &str, ns: &str, name: &str) -> serde_json::Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": ns}})
}

kptest!(
    last_applied_in_removed_apis_fails_and_reapplying_clears_it,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "apis");
        dir.write("wf.yaml", WORKFLOW);

        created.create(deployment(&ns, "web"));
        annotate(
            "deployment",
            &ns,
            "web",
            LAST_APPLIED,
            applied("extensions/v1beta1", "Deployment", &ns, "web"),
        );
        created.create(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "front", "namespace": ns},
            "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}},
        }));
        annotate(
            "ingress",
            &ns,
            "front",
            LAST_APPLIED,
            applied("extensions/v1beta1", "Ingress", &ns, "front"),
        );
        // Applied in a current version: nothing to say, whatever it is served as.
        created.create(deployment(&ns, "current"));
        annotate(
            "deployment",
            &ns,
            "current",
            LAST_APPLIED,
            applied("apps/v1", "Deployment", &ns, "current"),
        );
        // Never applied: its served apiVersion says nothing, so it is not judged.
        created.create(deployment(&ns, "created"));
        // Another tool's record of the applied manifest counts only when the user names it (and
        // only for the Deployment: its ReplicaSet inherits the annotation, which is not about it).
        created.create(deployment(&ns, "by-kapp"));
        annotate(
            "deployment",
            &ns,
            "by-kapp",
            "kapp.k14s.io/original",
            applied("apps/v1beta2", "Deployment", &ns, "by-kapp"),
        );

        run(&dir, "before", &ns, &[], 1);
        assert_eq!(
            findings(&dir, "before", "removed"),
            vec![row(&[
                "failed",
                "extensions/v1beta1",
                "Deployment",
                &ns,
                "web",
                "cluster",
                "apps/v1",
                "v1.16.0"
            ])]
        );
        assert_eq!(
            findings(&dir, "before", "deprecated"),
            vec![row(&[
                "warning",
                "extensions/v1beta1",
                "Ingress",
                &ns,
                "front",
                "cluster",
                "networking.k8s.io/v1",
                "v1.22.0"
            ])]
        );
        let output = step_output(&dir, "before", "removed");
        assert_eq!(output["outcome"], "failed");
        assert_eq!(output["total"], 2, "{output}");
        assert_eq!(
            step_output(&dir, "before", "deprecated")["outcome"],
            "warning"
        );

        // At 1.22 the Ingress is removed too.
        run(&dir, "at-1-22", &ns, &["--param", "to=1.22"], 1);
        let removed = findings(&dir, "at-1-22", "removed");
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert_eq!(removed[1][2], "Ingress");
        assert_eq!(removed[1][7], "v1.22.0");

        run(
            &dir,
            "kapp",
            &ns,
            &["--param", "annotations=kapp.k14s.io/original"],
            1,
        );
        assert_eq!(
            findings(&dir, "kapp", "removed"),
            vec![
                row(&[
                    "failed",
                    "apps/v1beta2",
                    "Deployment",
                    &ns,
                    "by-kapp",
                    "cluster",
                    "apps/v1",
                    "v1.16.0"
                ]),
                row(&[
                    "failed",
                    "extensions/v1beta1",
                    "Deployment",
                    &ns,
                    "web",
                    "cluster",
                    "apps/v1",
                    "v1.16.0"
                ]),
            ]
        );

        // Applied again in current versions, both checks pass.
        annotate(
            "deployment",
            &ns,
            "web",
            LAST_APPLIED,
            applied("apps/v1", "Deployment", &ns, "web"),
        );
        annotate(
            "ingress",
            &ns,
            "front",
            LAST_APPLIED,
            applied("networking.k8s.io/v1", "Ingress", &ns, "front"),
        );
        run(&dir, "after", &ns, &[], 0);
        assert_eq!(step_output(&dir, "after", "removed")["outcome"], "passed");
        assert_eq!(
            step_output(&dir, "after", "deprecated")["outcome"],
            "passed"
        );
        assert_eq!(step_output(&dir, "after", "removed")["total"], 0);
    }
);

/// `data.release` of a Helm 3 release Secret: Helm gzips the release JSON and base64s it; the
/// API then holds that text as the Secret's (base64) data.
fn helm_release_data(release: &serde_json::Value) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(release.to_string().as_bytes()).expect("gzip");
    let gzipped = gz.finish().expect("gzip");
    let b64 = base64::engine::general_purpose::STANDARD;
    b64.encode(b64.encode(gzipped))
}

fn helm_secret(
    ns: &str,
    release: &str,
    version: u32,
    status: &str,
    manifest: &str,
) -> serde_json::Value {
    let payload = json!({
        "name": release,
        "namespace": ns,
        "version": version,
        "info": {"status": status},
        "chart": {"metadata": {"name": release, "version": "0.1.0"}},
        "manifest": manifest,
    });
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "helm.sh/release.v1",
        "metadata": {
            "name": format!("sh.helm.release.v1.{release}.v{version}"),
            "namespace": ns,
            "labels": {"name": release, "owner": "helm", "status": status, "version": version.to_string()},
        },
        "data": {"release": helm_release_data(&payload)},
    })
}

kptest!(
    helm_release_secrets_name_the_release_and_deleting_them_clears_it,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "apis-helm");
        dir.write("wf.yaml", WORKFLOW);

        // Revision 1 is superseded: what it held is no longer deployed.
        created.create(helm_secret(
        &ns,
        "shop",
        1,
        "superseded",
        "---\n# Source: shop/templates/old.yaml\napiVersion: extensions/v1beta1\nkind: ReplicaSet\nmetadata:\n  name: old\n",
    ));
        created.create(helm_secret(
        &ns,
        "shop",
        2,
        "deployed",
        "---\n# Source: shop/templates/agent.yaml\napiVersion: extensions/v1beta1\nkind: DaemonSet\nmetadata:\n  name: agent\n---\n# Source: shop/templates/ing.yaml\napiVersion: extensions/v1beta1\nkind: Ingress\nmetadata:\n  name: shop\n  namespace: edge\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: fine\n",
    ));
        // Uninstalled with --keep-history: nothing of it is deployed.
        created.create(helm_secret(
            &ns,
            "gone",
            1,
            "uninstalled",
            "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: gone\n",
        ));
        let source = format!("helm:{ns}/shop");

        run(&dir, "before", &ns, &[], 1);
        assert_eq!(
            findings(&dir, "before", "removed"),
            vec![row(&[
                "failed",
                "extensions/v1beta1",
                "DaemonSet",
                &ns,
                "agent",
                &source,
                "apps/v1",
                "v1.16.0"
            ])]
        );
        assert_eq!(
            findings(&dir, "before", "deprecated"),
            vec![row(&[
                "warning",
                "extensions/v1beta1",
                "Ingress",
                "edge",
                "shop",
                &source,
                "networking.k8s.io/v1",
                "v1.22.0"
            ])]
        );

        for version in [1, 2] {
            kubectl(
                &[
                    "delete",
                    "secret",
                    "-n",
                    &ns,
                    &format!("sh.helm.release.v1.shop.v{version}"),
                ],
                None,
            );
        }
        run(&dir, "after", &ns, &[], 0);
        assert_eq!(step_output(&dir, "after", "removed")["total"], 0);
        assert_eq!(
            step_output(&dir, "after", "deprecated")["outcome"],
            "passed"
        );
    }
);

kptest!(
    a_release_secret_that_does_not_decode_is_a_failed_finding_naming_it,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "apis-bad");
        dir.write("wf.yaml", WORKFLOW);
        let mut secret = helm_secret(&ns, "broken", 1, "deployed", "");
        secret["data"]["release"] =
            json!(base64::engine::general_purpose::STANDARD.encode("not base64 at all!"));
        created.create(secret);

        // A healthy release beside it is still judged.
        created.create(helm_secret(
            &ns,
            "ok",
            1,
            "deployed",
            "apiVersion: extensions/v1beta1\nkind: DaemonSet\nmetadata:\n  name: agent\n",
        ));

        run(&dir, "bad", &ns, &[], 1);
        let secret_name = "sh.helm.release.v1.broken.v1";
        let output = step_output(&dir, "bad", "removed");
        let items = output["items"].as_array().expect("items");
        assert_eq!(items.len(), 2, "{output}");
        assert_eq!(
            items[0]["message"]
                .as_str()
                .unwrap_or_default()
                .split('|')
                .nth(4),
            Some("agent"),
            "{output}"
        );
        let broken = items[1]["message"].as_str().unwrap_or_default();
        let source = format!("helm:{ns}/broken");
        assert_eq!(
            broken.split('|').take(6).collect::<Vec<_>>(),
            [
                "failed",
                "v1",
                "Secret",
                ns.as_str(),
                secret_name,
                source.as_str()
            ],
            "{output}"
        );
        assert_eq!(step_output(&dir, "bad", "deprecated")["outcome"], "passed");

        kubectl(&["delete", "secret", "-n", &ns, secret_name], None);
        run(&dir, "fixed", &ns, &[], 1);
        let output = step_output(&dir, "fixed", "removed");
        assert_eq!(
            output["items"].as_array().map(Vec::len),
            Some(1),
            "{output}"
        );
    }
);

kptest!(more_objects_than_a_page_are_all_read, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "apis-many");
    dir.write("wf.yaml", WORKFLOW);
    // One more than a list page (500): the second page must be asked for. The annotation is
    // one the user names, which `kubectl create` leaves as written.
    let count = 501;
    let items: Vec<serde_json::Value> = (0..count)
            .map(|i| {
                let name = format!("r{i:03}");
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "annotations": {"example.com/applied": applied("rbac.authorization.k8s.io/v1beta1", "Role", &ns, &name).to_string()},
                    },
                    "rules": [],
                })
            })
            .collect();
    kubectl(
        &["create", "-f", "-"],
        Some(&json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()),
    );
    run(
        &dir,
        "many",
        &ns,
        &[
            "--param",
            "to=1.22",
            "--param",
            "annotations=example.com/applied",
        ],
        1,
    );
    let found = findings(&dir, "many", "removed");
    assert_eq!(found.len(), count, "{:?}", found.last());
    assert_eq!(
        found[count - 1],
        row(&[
            "failed",
            "rbac.authorization.k8s.io/v1beta1",
            "Role",
            &ns,
            "r500",
            "cluster",
            "rbac.authorization.k8s.io/v1",
            "v1.22.0"
        ])
    );
});

kptest!(
    cluster_scoped_objects_are_read_when_no_namespace_is_named,
    |dir| {
        let mut created = Created::default();
        dir.write("wf.yaml", WORKFLOW);
        let name = unique("apis-role");
        created.create(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [],
        }));
        annotate(
            "clusterrole",
            "default",
            &name,
            LAST_APPLIED,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1beta1", "kind": "ClusterRole", "metadata": {"name": name}}),
        );
        // The whole cluster: other tests' objects may be there too, so only ours is looked for.
        let ours = |run: &str| -> Vec<Vec<String>> {
            findings(&dir, run, "removed")
                .into_iter()
                .filter(|f| f[4] == name)
                .collect()
        };
        kp(
            &dir,
            &[
                "run", "wf.yaml", "--run-id", "all", "--param", "ns=", "--param", "to=1.22",
            ],
        );
        assert_eq!(
            ours("all"),
            vec![row(&[
                "failed",
                "rbac.authorization.k8s.io/v1beta1",
                "ClusterRole",
                "null",
                &name,
                "cluster",
                "rbac.authorization.k8s.io/v1",
                "v1.22.0"
            ])]
        );
        // Scoped to a namespace, cluster-scoped objects are left out.
        let ns = namespace(&mut created, "apis-scoped");
        run(&dir, "scoped", &ns, &["--param", "to=1.22"], 0);
        assert_eq!(ours("scoped"), Vec::<Vec<String>>::new());

        annotate(
            "clusterrole",
            "default",
            &name,
            LAST_APPLIED,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}}),
        );
        kp(
            &dir,
            &[
                "run", "wf.yaml", "--run-id", "fixed", "--param", "ns=", "--param", "to=1.22",
            ],
        );
        assert_eq!(ours("fixed"), Vec::<Vec<String>>::new());
    }
);

/// The peers' fixtures: `$KPILOT_SHARED_DIR/peer-fixtures/removed-apis`, else
/// `../shared/peer-fixtures/removed-apis` beside the repository. Missing, the test fails.
fn peer_fixtures() -> std::path::PathBuf {
    let shared = std::env::var_os("KPILOT_SHARED_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| super::root().join("../shared"));
    let dir = shared.join("peer-fixtures/removed-apis");
    assert!(
        dir.is_dir(),
        "peer fixtures missing: {} is not a directory (set KPILOT_SHARED_DIR to the shared directory)",
        dir.display()
    );
    dir
}

/// A Report running only the two removed-API checks, their `namespace` param set to `ns`.
fn report(ns: &str) -> String {
    format!(
        "apiVersion: kpilot/v1
kind: Report
metadata: {{name: apis}}
spec:
  clusterType: self-hosted
  select: {{ids: [removed-apis, deprecated-apis]}}
  overrides:
    - {{check: removed-apis, params: {{namespace: \"{ns}\"}}}}
    - {{check: deprecated-apis, params: {{namespace: \"{ns}\"}}}}
"
    )
}

/// `kpilot inspect ... -o json`, expecting exit `code`; the report.
fn inspect(dir: &Dir, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec![
        "inspect",
        "--scenario",
        "upgrade",
        "--to",
        "1.16",
        "--report",
        "r.yaml",
        "-o",
        "json",
    ];
    all.extend(args);
    let ran = dir.kp(&all).expect(code);
    serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("inspect -o json is not JSON ({e}): {}", ran.stdout))
}

/// The report's check `id`.
fn check<'r>(report: &'r serde_json::Value, id: &str) -> &'r serde_json::Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report}"))
}

/// A check's items as (outcome, apiVersion, kind, namespace, name, source, replacement,
/// removedIn), sorted; absent fields are "".
fn items(report: &serde_json::Value, id: &str) -> Vec<[String; 8]> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let mut out: Vec<[String; 8]> = check(report, id)["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let o = &i["object"];
            [
                s(&i["outcome"]),
                s(&o["apiVersion"]),
                s(&o["kind"]),
                s(&o["namespace"]),
                s(&o["name"]),
                s(&i["source"]),
                s(&i["replacement"]),
                s(&i["removedIn"]),
            ]
        })
        .collect();
    out.sort();
    out
}

fn item(fields: [&str; 8]) -> [String; 8] {
    fields.map(str::to_owned)
}

kptest!(
    inspect_names_annotated_objects_and_helm_releases_then_passes_once_fixed,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "apis-inspect");
        dir.write("r.yaml", &report(&ns));
        let kubeconfig = super::kubeconfig().display().to_string();

        created.create(deployment(&ns, "web"));
        annotate(
            "deployment",
            &ns,
            "web",
            LAST_APPLIED,
            applied("extensions/v1beta1", "Deployment", &ns, "web"),
        );
        created.create(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "front", "namespace": ns},
            "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}},
        }));
        annotate(
            "ingress",
            &ns,
            "front",
            LAST_APPLIED,
            applied("extensions/v1beta1", "Ingress", &ns, "front"),
        );
        created.create(helm_secret(
            &ns,
            "shop",
            1,
            "deployed",
            "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata:\n  name: deny\n",
        ));
        let helm = format!("helm:{ns}/shop");

        let r = inspect(&dir, &["--kubeconfig", &kubeconfig], 1);
        assert_eq!(r["schemaVersion"], 1);
        assert_eq!(r["target"], "1.16");
        let removed = check(&r, "removed-apis");
        assert_eq!(removed["outcome"], "failed", "{removed}");
        assert_eq!(removed["category"], "workloads/apis");
        assert_eq!(removed["severity"], "error");
        assert_eq!(
            removed["remediation"]["url"],
            "https://kubernetes.io/docs/reference/using-api/deprecation-guide/"
        );
        assert_eq!(
            items(&r, "removed-apis"),
            vec![
                item([
                    "failed",
                    "extensions/v1beta1",
                    "Deployment",
                    &ns,
                    "web",
                    "cluster",
                    "apps/v1",
                    "v1.16.0"
                ]),
                item([
                    "failed",
                    "extensions/v1beta1",
                    "NetworkPolicy",
                    &ns,
                    "deny",
                    &helm,
                    "networking.k8s.io/v1",
                    "v1.16.0"
                ]),
            ]
        );
        let first = &removed["items"].as_array().expect("items")[0];
        assert_eq!(
            first["message"].as_str().unwrap_or_default(),
            if first["source"] == "cluster" {
                format!("cluster: Deployment {ns}/web uses extensions/v1beta1, removed in v1.16.0; use apps/v1")
            } else {
                format!("{helm}: NetworkPolicy {ns}/deny uses extensions/v1beta1, removed in v1.16.0; use networking.k8s.io/v1")
            }
        );
        let deprecated = check(&r, "deprecated-apis");
        assert_eq!(deprecated["outcome"], "warning", "{deprecated}");
        assert_eq!(
            items(&r, "deprecated-apis"),
            vec![item([
                "warning",
                "extensions/v1beta1",
                "Ingress",
                &ns,
                "front",
                "cluster",
                "networking.k8s.io/v1",
                "v1.22.0"
            ])]
        );
        assert_eq!(r["summary"]["failed"], 1, "{}", r["summary"]);
        assert_eq!(r["summary"]["warning"], 1, "{}", r["summary"]);

        // Applied again in current versions, the release's Secret gone: both pass.
        annotate(
            "deployment",
            &ns,
            "web",
            LAST_APPLIED,
            applied("apps/v1", "Deployment", &ns, "web"),
        );
        annotate(
            "ingress",
            &ns,
            "front",
            LAST_APPLIED,
            applied("networking.k8s.io/v1", "Ingress", &ns, "front"),
        );
        kubectl(
            &["delete", "secret", "-n", &ns, "sh.helm.release.v1.shop.v1"],
            None,
        );
        let r = inspect(&dir, &["--kubeconfig", &kubeconfig], 0);
        assert_eq!(check(&r, "removed-apis")["outcome"], "passed");
        assert_eq!(check(&r, "deprecated-apis")["outcome"], "passed");
        assert_eq!(r["summary"]["passed"], 2, "{}", r["summary"]);
    }
);

kptest!(inspect_no_cluster_judges_the_peers_fixtures, |dir| {
    dir.write("r.yaml", &report(""));
    let fixtures = peer_fixtures();
    let manifests = fixtures.display().to_string();
    // No cluster is read: a kubeconfig that does not exist is never opened.
    let r = inspect(
        &dir,
        &[
            "--no-cluster",
            "--manifests",
            &manifests,
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ],
        1,
    );
    let file = |name: &str| fixtures.join(name).display().to_string();
    let removed = items(&r, "removed-apis");
    // What kubent's and pluto's own tests find at 1.16: Deployments in apps/v1beta1 and
    // extensions/v1beta1, read from YAML, JSON, a List, last-applied annotations and Helm
    // release Secrets (named after the release, not the file).
    for expected in [
        [
            "failed",
            "apps/v1beta1",
            "Deployment",
            "",
            "nginx-deployment-old",
            &file("deployment-v1beta1.yaml"),
            "apps/v1",
            "v1.16.0",
        ],
        [
            "failed",
            "extensions/v1beta1",
            "Deployment",
            "default",
            "nginx-deployment-old",
            &file("deployment-v1beta1.json"),
            "apps/v1",
            "v1.16.0",
        ],
        [
            "failed",
            "apps/v1beta1",
            "Deployment",
            "default",
            "nginx-deployment-old",
            &file("fake-deployment-v1beta1-with-annotation.yaml"),
            "apps/v1",
            "v1.16.0",
        ],
        [
            "failed",
            "extensions/v1beta1",
            "Deployment",
            "",
            "utilities",
            &file("pluto-list-deployment-deprecated-and-non-deprecated.yaml"),
            "apps/v1",
            "v1.16.0",
        ],
        [
            "failed",
            "extensions/v1beta1",
            "Deployment",
            "json-namespace",
            "utilities",
            &file("pluto-finder-deployment-extensions-v1beta1.json"),
            "apps/v1",
            "v1.16.0",
        ],
        [
            "failed",
            "extensions/v1beta1",
            "Deployment",
            "demo2",
            "test-helm3chart-v1beta1",
            "helm:demo2/test",
            "apps/v1",
            "v1.16.0",
        ],
        [
            "failed",
            "extensions/v1beta1",
            "Deployment",
            "default",
            "test-helm3chart-v1beta1",
            "helm:default/test",
            "apps/v1",
            "v1.16.0",
        ],
    ] {
        assert!(
            removed.contains(&item(expected)),
            "{expected:?} not in {removed:#?}"
        );
    }
    assert_eq!(removed.len(), 11, "{removed:#?}");
    // Served (apps/v1) with no annotation, the non-deprecated List item, apps/v1 itself: nothing.
    let names: Vec<&str> = removed.iter().map(|i| i[5].as_str()).collect();
    for fine in [
        "fake-deployment-v1beta1-no-annotation.yaml",
        "pluto-list-deployment-non-deprecated.yaml",
        "pluto-deployment-apps-v1.yaml",
    ] {
        assert!(!names.contains(&file(fine).as_str()), "{fine} was flagged");
    }
    let deprecated = items(&r, "deprecated-apis");
    for expected in [
        [
            "warning",
            "extensions/v1beta1",
            "Ingress",
            "",
            "test-ingress",
            &file("ingress-v1beta1.yaml"),
            "networking.k8s.io/v1",
            "v1.22.0",
        ],
        [
            "warning",
            "extensions/v1beta1",
            "Ingress",
            "default",
            "test-ingress",
            &file("fake-ingress-v1beta1-with-annotation.yaml"),
            "networking.k8s.io/v1",
            "v1.22.0",
        ],
        [
            "warning",
            "extensions/v1beta1",
            "Ingress",
            "",
            "test-ingress",
            &file("deployment-v1beta1-and-ingress-v1beta1.yaml"),
            "networking.k8s.io/v1",
            "v1.22.0",
        ],
    ] {
        assert!(
            deprecated.contains(&item(expected)),
            "{expected:?} not in {deprecated:#?}"
        );
    }
    assert!(
        deprecated.iter().all(|i| i[0] == "warning"),
        "{deprecated:#?}"
    );

    // A row the user adds in the Report flags a CRD the default table does not know.
    dir.write(
        "r.yaml",
        &format!(
            "{}  apiVersions:\n    - {{version: cert-manager.io/v1alpha2, kind: Issuer, deprecated-in: v1.4.0, removed-in: v1.6.0, replacement-api: cert-manager.io/v1}}\n",
            report("")
        ),
    );
    let issuer = file("issuer-v1alpha2.yaml");
    let r = inspect(&dir, &["--no-cluster", "--manifests", &issuer], 1);
    assert_eq!(
        items(&r, "removed-apis"),
        vec![item([
            "failed",
            "cert-manager.io/v1alpha2",
            "Issuer",
            "sandbox",
            "selfsigned-issuer",
            &issuer,
            "cert-manager.io/v1",
            "v1.6.0"
        ])]
    );
});

kptest!(an_object_served_in_two_groups_is_judged_once, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "apis-twice");
    // A row for the core group's Event (saying nothing) makes the core group one to read:
    // an Event is then listed both as v1 and as events.k8s.io/v1.
    dir.write(
        "wf.yaml",
        &WORKFLOW.replace(
            "annotations: \"{{params.annotations}}\"}}",
            "annotations: \"{{params.annotations}}\", versions: \"[{version: v1, kind: Event}]\"}}",
        ),
    );
    created.create(json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "started", "namespace": ns},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": ns},
        "reason": "Started",
        "message": "started",
        "type": "Normal",
    }));
    annotate(
        "event",
        &ns,
        "started",
        LAST_APPLIED,
        applied("events.k8s.io/v1beta1", "Event", &ns, "started"),
    );
    run(&dir, "twice", &ns, &["--param", "to=1.25"], 1);
    assert_eq!(
        findings(&dir, "twice", "removed"),
        vec![row(&[
            "failed",
            "events.k8s.io/v1beta1",
            "Event",
            &ns,
            "started",
            "cluster",
            "events.k8s.io/v1",
            "v1.25.0"
        ])]
    );
});
