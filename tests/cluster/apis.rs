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
