//! Addon versions read from DaemonSet and Deployment images in kube-system.

use serde_json::json;

use super::{fixture, kp, step_output, unique, Created};
use crate::util::step_field;

/// A DaemonSet that schedules nowhere (its nodeSelector matches no node), so
/// only its image matters.
fn daemonset(name: &str, image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "kube-system", "labels": {"k8s-app": name}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": name}},
            "template": {
                "metadata": {"labels": {"k8s-app": name}},
                "spec": {
                    "nodeSelector": {"kpilot-test": "no-such-node"},
                    "containers": [{"name": "main", "image": image}],
                },
            },
        },
    })
}

kptest!(addon_min_version_from_the_daemonset_image, |dir| {
    let name = unique("kube-proxy");
    let mut created = Created::default();
    created.create(daemonset(&name, "registry.k8s.io/kube-proxy:v1.33.5"));
    let wf = fixture("addon-version.yaml");
    let addon = format!("addon={name}");

    kp(
        &dir,
        &[
            "run",
            &wf,
            "--run-id",
            "ok",
            "--param",
            &addon,
            "--param",
            "minVersion=1.33.0",
        ],
    )
    .expect(0);
    assert_eq!(
        step_output(&dir, "ok", "addon-version")["outcome"],
        "passed"
    );

    kp(
        &dir,
        &[
            "run",
            &wf,
            "--run-id",
            "low",
            "--param",
            &addon,
            "--param",
            "minVersion=v1.33.10",
        ],
    )
    .expect(1);
    let reason = step_field(&dir.status("low"), "addon-version", "reason");
    assert!(
        reason.contains(&format!("{name} is at v1.33.5, below v1.33.10")),
        "{reason}"
    );

    // The run kept what the check saw: the addon as read from its DaemonSet.
    let output = step_output(&dir, "low", "addon-version");
    assert_eq!(output["outcome"], "failed");
    assert_eq!(output["fact"], "cluster.addons namespace=kube-system");
});

kptest!(addon_four_part_version_from_a_deployment, |dir| {
    let name = unique("vendor-cni");
    let mut created = Created::default();
    created.create(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "kube-system"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "localhost:5000/cni/terway:v1.0.9.14-aliyun.1"}]},
            },
        },
    }));
    dir.write(
        "wf.yaml",
        &format!(
            "apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: addon}}
spec:
  steps:
    - id: at-least
      phase: pre-check
      check:
        query: cluster.addons
        expect: \"v(data['{name}'].version) >= v('1.0.9.9') && data['{name}'].kind == 'Deployment'\"
    - id: too-low
      phase: pre-check
      check:
        query: cluster.addons
        severity: warning
        expect: \"v(data['{name}'].version) >= v('1.0.10')\"
        message: \"{{{{'{name}'}}}} is at {{{{data['{name}'].version}}}}\"
"
        ),
    );
    kp(&dir, &["run", "wf.yaml", "--run-id", "r"]).expect(0);
    assert_eq!(step_output(&dir, "r", "at-least")["outcome"], "passed");
    // A warning never blocks: the step succeeded, with the outcome recorded.
    let status = dir.status("r");
    assert_eq!(step_field(&status, "too-low", "state"), "succeeded");
    let output = step_output(&dir, "r", "too-low");
    assert_eq!(output["outcome"], "warning");
    assert_eq!(
        output["message"],
        format!("{name} is at v1.0.9.14-aliyun.1")
    );
    let logs = kp(&dir, &["logs", "r", "too-low"]).expect(0);
    assert!(logs.stdout.contains("outcome: warning"), "{}", logs.stdout);
});
