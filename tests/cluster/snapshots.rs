//! `snapshot` steps and `kpilot diff` on the real cluster: a snapshot, a
//! person changes the cluster while the run waits for approval, a second
//! snapshot, a post-check against the first, and the diff of the two.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{kp, kubectl, node, step_output, unique, wait_ready, Created};
use crate::util::{step_field, Dir};

/// A run: snapshot `before`, an approval `go`, snapshot `after`, and a
/// post-check that no fewer nodes are Ready than before, all scoped to the
/// nodes labelled `label` and namespace `ns`.
fn workflow(dir: &Dir, label: &str, ns: &str) {
    dir.write(
        "wf.yaml",
        &format!(
            "apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: snapshots}}
spec:
  steps:
    - id: before
      phase: pre-check
      snapshot: {{nodeSelector: \"kpilot-test={label}\", namespaces: [{ns}]}}
    - id: go
      phase: upgrade
      needs: [before]
      approval: {{message: \"change the cluster\"}}
    - id: after
      phase: post-check
      needs: [go]
      snapshot: {{nodeSelector: \"kpilot-test={label}\", namespaces: [{ns}]}}
    - id: ready-kept
      phase: post-check
      needs: [after]
      check:
        query: {{cluster: nodes, labelSelector: \"kpilot-test={label}\"}}
        snapshots: [before]
        expect: \"size(data.filter(n, n.ready)) >= snapshots['before'].nodes.ready\"
        message: \"{{{{size(data.filter(n, n.ready))}}}} nodes are Ready, fewer than {{{{snapshots['before'].nodes.ready}}}} before\"
"
        ),
    );
}

/// A Deployment of `replicas` pods pinned to node `on`.
fn deployment(ns: &str, name: &str, on: &str, replicas: i64) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": on},
                    "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        },
    })
}

/// Waits until Deployment `ns/name` has `n` available replicas and no more.
fn wait_available(ns: &str, name: &str, n: i64) {
    let started = Instant::now();
    loop {
        let out = kubectl(
            &[
                "get",
                "deployment",
                name,
                "-n",
                ns,
                "-o",
                "jsonpath={.status.availableReplicas}",
            ],
            None,
        );
        if out.trim().parse::<i64>().unwrap_or(0) == n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "deployment {ns}/{name} has {out:?} available, not {n}, after 90s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

kptest!(
    diff_names_exactly_what_changed_between_the_snapshots,
    |dir| {
        let label = unique("snap");
        let ns = unique("snap-ns");
        let name = |s: &str| format!("{label}-{s}");
        let mut created = Created::default();
        created.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        created.create(node(&name("kwok"), &label, "v1.34.4", None));
        created.create(node(&name("flaky"), &label, "v1.34.4", Some(true)));
        created.create(node(&name("gone"), &label, "v1.34.4", Some(true)));
        created.create(node(&name("upgraded"), &label, "v1.34.4", Some(true)));
        wait_ready(&name("kwok"));
        created.create(deployment(&ns, "web", &name("kwok"), 2));
        // A pod on a node no kubelet (nor KWOK) manages: its status is the test's to set.
        created.create(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "worker", "namespace": ns},
            "spec": {
                "nodeName": name("upgraded"),
                "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
            },
        }));
        wait_available(&ns, "web", 2);

        workflow(&dir, &label, &ns);
        let ran = kp(&dir, &["run", "wf.yaml", "--run-id", "r"]).expect(3);
        assert!(ran.stderr.contains("change the cluster"), "{}", ran.stderr);
        let before = step_output(&dir, "r", "before");
        assert_eq!(before["nodes"]["total"], 4, "{before}");
        assert_eq!(before["nodes"]["ready"], 4, "{before}");
        assert_eq!(before["workloads"]["deployments"]["total"], 1, "{before}");
        assert_eq!(
            before["workloads"]["deployments"]["items"][0],
            json!({"namespace": ns, "name": "web", "replicas": 2, "available": 2})
        );
        assert_eq!(before["pods"]["total"], 3, "{before}");
        assert_eq!(before["pods"]["restarts"], json!({}), "{before}");
        assert!(before["apis"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "apps/v1")));

        // What a bad upgrade does: a node goes NotReady, one is lost, one runs a
        // new kubelet, one is cordoned, a pod restarts, a Deployment loses a replica.
        kubectl(
            &[
                "patch",
                "node",
                &name("flaky"),
                "--subresource=status",
                "--type=strategic",
                "-p",
                r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady","message":"PLEG is not healthy"}]}}"#,
            ],
            None,
        );
        kubectl(&["delete", "node", &name("gone")], None);
        kubectl(
            &[
                "patch",
                "node",
                &name("upgraded"),
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"nodeInfo":{"kubeletVersion":"v1.35.4"}}}"#,
            ],
            None,
        );
        kubectl(&["cordon", &name("kwok")], None);
        kubectl(
            &[
                "patch",
                "pod",
                "worker",
                "-n",
                &ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"containerStatuses":[{"name":"main","image":"registry.k8s.io/pause:3.10","imageID":"","ready":false,"restartCount":3,"state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}}"#,
            ],
            None,
        );
        kubectl(
            &["scale", "deployment", "web", "-n", &ns, "--replicas=1"],
            None,
        );
        wait_available(&ns, "web", 1);

        // The post-check sees one fewer Ready node than before, and fails.
        kp(&dir, &["approve", "r", "go"]).expect(1);
        let reason = step_field(&dir.status("r"), "ready-kept", "reason");
        assert!(
            reason.contains("2 nodes are Ready, fewer than 4 before"),
            "{reason}"
        );

        let text = kp(&dir, &["diff", "r"]).expect(0).stdout;
        let lines: Vec<&str> = text.lines().collect();
        let expected = [
            "ready nodes: 4 → 2".to_owned(),
            format!("node lost: {}", name("gone")),
            format!("node {}: Ready → NotReady", name("flaky")),
            format!("node {}: kubelet v1.34.4 → v1.35.4", name("upgraded")),
            format!("node {}: cordoned", name("kwok")),
            format!("deployment {ns}/web: 2/2 available → 1/1 available"),
            format!("pod {ns}/worker: restarted 3 time(s) (0 → 3)"),
        ];
        for line in &expected {
            assert!(lines.contains(&line.as_str()), "{line:?} not in\n{text}");
        }
        assert!(
            lines[0].starts_with("before (") && lines[0].contains(") → after ("),
            "{text}"
        );
        // Nothing else about these nodes and this namespace: no version moved,
        // no node added, no other pod restarted (addons and APIs are the shared
        // cluster's, which other tests change).
        for line in &lines[1..] {
            let ours = line.starts_with("version:")
                || line.starts_with("node")
                || line.starts_with("ready nodes")
                || line.starts_with("deployment")
                || line.starts_with("pod");
            if ours {
                assert!(
                    expected.iter().any(|e| e == line),
                    "unexpected {line:?} in\n{text}"
                );
            }
        }

        let json: serde_json::Value = serde_json::from_str(
            &kp(&dir, &["diff", "r", "before", "after", "-o", "json"])
                .expect(0)
                .stdout,
        )
        .expect("diff -o json is JSON");
        assert_eq!(json["steps"], json!({"before": "before", "after": "after"}));
        assert_eq!(json["version"], serde_json::Value::Null);
        assert_eq!(json["readyNodes"], json!({"before": 4, "after": 2}));
        assert_eq!(json["nodesLost"], json!([name("gone")]));
        assert_eq!(json["nodesAdded"], json!([]));
        assert_eq!(
            json["readiness"],
            json!([{"name": name("flaky"), "before": true, "after": false}])
        );
        assert_eq!(
            json["kubelet"],
            json!([{"name": name("upgraded"), "before": "v1.34.4", "after": "v1.35.4"}])
        );
        assert_eq!(
            json["cordoned"],
            json!([{"name": name("kwok"), "before": false, "after": true}])
        );
        assert_eq!(
            json["deploymentsDropped"],
            json!([{
                "name": format!("{ns}/web"),
                "before": {"wanted": 2, "available": 2},
                "after": {"wanted": 1, "available": 1},
            }])
        );
        assert_eq!(json["deploymentsLost"], json!([]));
        assert_eq!(
            json["podsRestarted"],
            json!([{"name": format!("{ns}/worker"), "before": 0, "after": 3}])
        );
    }
);

kptest!(
    a_post_check_against_the_snapshot_passes_when_nothing_changed,
    |dir| {
        let label = unique("same");
        let ns = unique("same-ns");
        let mut created = Created::default();
        created.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        created.create(node(&format!("{label}-a"), &label, "v1.34.4", Some(true)));
        created.create(node(&format!("{label}-b"), &label, "v1.34.4", Some(true)));
        workflow(&dir, &label, &ns);
        kp(&dir, &["run", "wf.yaml", "--run-id", "r"]).expect(3);
        kp(&dir, &["approve", "r", "go"]).expect(0);
        assert_eq!(step_output(&dir, "r", "ready-kept")["outcome"], "passed");
        let text = kp(&dir, &["diff", "r"]).expect(0).stdout;
        assert!(
            !text.contains("node") && !text.contains("ready nodes") && !text.contains("deployment"),
            "{text}"
        );
    }
);

kptest!(diff_refuses_a_run_without_two_snapshots, |dir| {
    let label = unique("one");
    let ns = unique("one-ns");
    let mut created = Created::default();
    created.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    workflow(&dir, &label, &ns);
    // Blocked at the approval: only `before` has been taken.
    kp(&dir, &["run", "wf.yaml", "--run-id", "r"]).expect(3);
    let ran = kp(&dir, &["diff", "r"]).expect(2);
    assert!(
        ran.stderr
            .contains("run r has 1 snapshot(s) taken (before); a diff needs two"),
        "{}",
        ran.stderr
    );
    let ran = kp(&dir, &["diff", "r", "before", "go"]).expect(2);
    assert!(
        ran.stderr
            .contains("step `go` of run r is not a snapshot step (it is an `approval` step)"),
        "{}",
        ran.stderr
    );
    let ran = kp(&dir, &["diff", "r", "before", "after"]).expect(2);
    assert!(
        ran.stderr
            .contains("snapshot step `after` of run r has no snapshot: it is "),
        "{}",
        ran.stderr
    );
    let ran = kp(&dir, &["diff", "no-such-run"]).expect(2);
    assert!(ran.stderr.contains("no-such-run"), "{}", ran.stderr);
});

kptest!(
    a_check_reading_a_snapshot_that_was_not_taken_names_it,
    |dir| {
        let wf = |before: &str| {
            format!(
                "apiVersion: kpilot/v1
kind: Workflow
metadata: {{name: early}}
spec:
  steps:
    - id: before
      phase: pre-check
{before}
    - id: same-version
      phase: pre-check
      needs: [before]
      check:
        query: cluster.version
        snapshots: [before]
        expect: \"data.gitVersion == snapshots['before'].version.gitVersion\"
"
            )
        };
        // `before` is no snapshot step, so the run has no snapshot `before`.
        dir.write("wf.yaml", &wf("      command: [\"true\"]"));
        kp(&dir, &["run", "wf.yaml", "--run-id", "r"]).expect(1);
        let reason = step_field(&dir.status("r"), "same-version", "reason");
        assert!(
            reason.contains("snapshot `before` is not in this run")
                && reason.contains("add the snapshot step to this step's `needs`"),
            "{reason}"
        );
        dir.write(
            "wf.yaml",
            &wf("      snapshot: {nodeSelector: \"kpilot-test=none\", namespaces: [default]}"),
        );
        kp(&dir, &["run", "wf.yaml", "--run-id", "r2"]).expect(0);
        assert_eq!(step_output(&dir, "r2", "same-version")["outcome"], "passed");
    }
);

kptest!(
    bad_snapshot_bodies_are_refused_naming_the_step_and_what_to_write,
    |dir| {
        for (body, says) in [
        (
            "      snapshot: {nodes: all}\n",
            "unknown key `nodes` in `snapshot`; it takes nodeSelector, namespaces",
        ),
        (
            "      snapshot: {namespaces: shop}\n",
            "`snapshot.namespaces` must be a list of namespace names, like `namespaces: [shop]`",
        ),
        (
            "      check: {query: cluster.nodes, expect: 'true', snapshots: [Before]}\n",
            "`check.snapshots` holds Before, which is not a step id",
        ),
        (
            "      check: {query: cluster.nodes, expect: \"snapshots['before'].nodes.ready > 0\"}\n",
            "check.expect: reads `snapshots`",
        ),
    ] {
        dir.write(
            "wf.yaml",
            &format!(
                "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {{name: bad}}\nspec:\n  steps:\n    - id: snap\n      phase: pre-check\n{body}"
            ),
        );
        let ran = dir.kp(&["validate", "wf.yaml"]).expect(2);
        assert!(
            ran.stderr.contains("wf.yaml") && ran.stderr.contains("snap") && ran.stderr.contains(says),
            "{body}: {}",
            ran.stderr
        );
    }
    }
);
